# dedupstore. Everything a target needs comes through the Go module proxy;
# nothing is installed by hand.
GO        ?= go
# Fuzz budgets are counts, not durations: Go 1.26's coordinator can fail a
# duration-bounded run with a spurious "context deadline exceeded" (go.dev/issue/75804).
FUZZTIME  ?= 100000x
BENCHCOUNT ?= 5
BENCHSTAT := $(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
STATICCHECK := $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
# The S3 tests run against a real server, the Versity gateway, built once
# into .tools (about a minute the first time), and again when its version
# changes; .tools/versitygw links to the version in use.
TOOLS     := $(CURDIR)/.tools
VERSITYGW_VERSION := v1.8.0
VERSITYGW := $(TOOLS)/versitygw-$(VERSITYGW_VERSION)/versitygw
# The race detector needs cgo, and so a C compiler.
CC        := $(shell $(GO) env CC)

.PHONY: demo build test vet race large cc zstd fuzz benchonce vitess bench bench-tree bench-realdb bench-vitess

## demo: three backups of a generated database, a restore, and what each cost
demo:
	$(GO) run ./bench/demo

## build: the command-line tool, as bin/dedupctl, stamped with its VCS revision when built
## from a git checkout (dedupctl version; -buildvcs=auto overrides a GOFLAGS that turns it off)
build:
	$(GO) build -buildvcs=auto -o bin/dedupctl ./cmd/dedupctl

## test: vet and staticcheck, every test under the race detector, short fuzz runs,
## every benchmark once, so that none rots, and the Vitess adapter with Vitess's own tests
test: vet race large fuzz benchonce vitess

vet:
	$(GO) vet ./...
	$(STATICCHECK) ./...

race: cc $(VERSITYGW)
	CGO_ENABLED=1 DEDUP_VERSITYGW=$(VERSITYGW) $(GO) test -race -count=1 ./...

# large runs the tests of size (named ...Large), which skip under the race
# detector: they test limits, not concurrency, and run 5-10x slower there.
large:
	$(GO) test -count=1 -run 'Large$$' ./...

# zstd installs the zstd command on Debian (as root) when it is missing, for
# make bench's comparison; without it, the comparison is left out.
zstd:
	@command -v zstd >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zstd >/dev/null; } || \
		echo "make: no zstd command: the zstd-1-T1 comparison is left out" >&2

# cc installs gcc on Debian (as root) when there is no C compiler, or says
# what to install.
cc:
	@command -v $(CC) >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		echo "make: no C compiler ($(CC)) for the race detector: installing gcc" && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >/dev/null; } || \
		{ echo "make: the race detector needs a C compiler ($(CC)): install gcc (Debian: apt-get install gcc)" >&2; exit 1; }

$(VERSITYGW):
	GOBIN=$(dir $(VERSITYGW)) $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)
	ln -sfn $(VERSITYGW) $(TOOLS)/versitygw

fuzz:
	$(GO) test ./chunkstore -run '^$$' -fuzz '^FuzzParsePackTrailer$$' -fuzztime $(FUZZTIME)
	$(GO) test ./chunkstore -run '^$$' -fuzz '^FuzzScanPack$$' -fuzztime $(FUZZTIME)
	$(GO) test ./chunkstore -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME)
	$(GO) test ./chunkstore -run '^$$' -fuzz '^FuzzFastCDC$$' -fuzztime $(FUZZTIME)
	$(GO) test ./index -run '^$$' -fuzz '^FuzzDecodeManifest$$' -fuzztime $(FUZZTIME)
	$(GO) test ./index -run '^$$' -fuzz '^FuzzRecords$$' -fuzztime $(FUZZTIME)
	$(GO) test ./storage -run '^$$' -fuzz '^FuzzNames$$' -fuzztime $(FUZZTIME)
	$(GO) test ./tree -run '^$$' -fuzz '^FuzzReadCatalog$$' -fuzztime $(FUZZTIME)

# benchonce runs every benchmark once, to show that each still compiles
# and runs (-short: on less data where a benchmark offers it); figures come
# from make bench.
benchonce: $(VERSITYGW)
	DEDUP_VERSITYGW=$(VERSITYGW) $(GO) test ./... -short -run '^$$' -bench . -benchtime 1x

## vitess: the Vitess adapter, a module of its own (vitess/): vet and staticcheck, its
## tests under the race detector, its benchmark once (small), then Vitess's own backup
## tests with dedup in place of Vitess's file storage (vitess/vitess-tests.sh; the first
## run builds much of Vitess, about 8 minutes on 2 cores, then the build cache serves it)
vitess: cc
	cd vitess && $(GO) vet ./... && $(STATICCHECK) ./...
	cd vitess && CGO_ENABLED=1 $(GO) test -race -count=1 ./...
	cd vitess && $(GO) test -run '^$$' -bench . -benchtime 1x -vitess-bench-mib 16 -vitess-bench-files 50 .
	GO=$(GO) vitess/vitess-tests.sh

## bench: ingest, re-ingest, restore and peak heap, dedup beside file and zstd -1 -T1
## (installed from Debian's packages if missing), as one table;
## then the parts of the pipeline (chunkers, hash, features, zstd levels, packs, index)
## as another
bench: zstd
	$(GO) test ./bench -run '^$$' -bench 'Ingest|Reingest|Restore' -benchmem -count $(BENCHCOUNT) | tee bench.out
	$(GO) test ./bench -run '^$$' -bench 'PeakHeap' -benchtime 1x | tee -a bench.out
	$(GO) test ./bench -run '^$$' -bench 'Chunk|Hash|Features|Compress|Decompress|PackWrite|Index' -benchmem -count $(BENCHCOUNT) > bench-parts.out
	$(BENCHSTAT) -col /store bench.out
	$(BENCHSTAT) bench-parts.out

## bench-tree: a tree of 20,000 small files: first backup and unchanged repeat, beside
## tar | zstd -1 -T1 on the same tree (and restic, when on the PATH)
bench-tree:
	$(GO) test ./cmd/dedupctl -run '^$$' -bench 'Tree' -count $(BENCHCOUNT) | tee bench-tree.out
	$(BENCHSTAT) -col /tool bench-tree.out

## bench-vitess: Vitess's builtin engine backs up 2,000 small files and a 1 GiB tablespace
## through mysqlctl.Backup into its file storage and into dedup, then again after 1 % of
## the pages changed: seconds and bytes stored of each
bench-vitess:
	cd vitess && $(GO) test -run '^$$' -bench BuiltinBackup -benchtime 1x -count $(BENCHCOUNT) . | tee ../bench-vitess.out

## bench-realdb: three full backups of a private MariaDB under sysbench load, beside the
## file storage, a verified restore and a chunker study; report in bench/results.
## Installs mariadb-server, mariadb-backup and sysbench if missing. Quick run:
##   make bench-realdb REALDB_FLAGS='-tables 2 -rows 50000 -write1 10s -write2 5s'
REALDB_FLAGS ?=
bench-realdb: build
	$(GO) run ./bench/realdb -dedupctl bin/dedupctl $(REALDB_FLAGS)
