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
# into .tools (about a minute the first time).
TOOLS     := $(CURDIR)/.tools
VERSITYGW := $(TOOLS)/versitygw

.PHONY: demo build test vet race fuzz bench bench-realdb

## demo: three backups of a generated database, a restore, and what each cost
demo:
	$(GO) run ./bench/demo

## build: the command-line tool, as bin/dedupctl
build:
	$(GO) build -o bin/dedupctl ./cmd/dedupctl

## test: vet and staticcheck, every test under the race detector, and short fuzz runs
test: vet race fuzz

vet:
	$(GO) vet ./...
	$(STATICCHECK) ./...

race: $(VERSITYGW)
	DEDUP_VERSITYGW=$(VERSITYGW) $(GO) test -race -count=1 ./...

$(VERSITYGW):
	GOBIN=$(TOOLS) $(GO) install github.com/versity/versitygw/cmd/versitygw@v1.8.0

fuzz:
	$(GO) test ./chunkstore -run '^$$' -fuzz '^FuzzParsePackTrailer$$' -fuzztime $(FUZZTIME)
	$(GO) test ./chunkstore -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME)
	$(GO) test ./index -run '^$$' -fuzz '^FuzzDecodeManifest$$' -fuzztime $(FUZZTIME)
	$(GO) test ./index -run '^$$' -fuzz '^FuzzRecords$$' -fuzztime $(FUZZTIME)
	$(GO) test ./storage -run '^$$' -fuzz '^FuzzNames$$' -fuzztime $(FUZZTIME)

## bench: ingest, re-ingest, restore and peak heap, dedup beside file, as one table;
## then the parts of the pipeline (chunkers, hash, zstd levels, packs, index) as another
bench:
	$(GO) test ./bench -run '^$$' -bench 'Ingest|Reingest|Restore' -benchmem -count $(BENCHCOUNT) | tee bench.out
	$(GO) test ./bench -run '^$$' -bench 'PeakHeap' -benchtime 1x | tee -a bench.out
	$(GO) test ./bench -run '^$$' -bench 'Chunk|Hash|Compress|Decompress|PackWrite|Index' -benchmem -count $(BENCHCOUNT) > bench-parts.out
	$(BENCHSTAT) -col /store bench.out
	$(BENCHSTAT) bench-parts.out

## bench-realdb: three full backups of a private MariaDB under sysbench load, beside the
## file storage, a verified restore and a chunker study; report in bench/results.
## Installs mariadb-server, mariadb-backup and sysbench if missing. Quick run:
##   make bench-realdb REALDB_FLAGS='-tables 2 -rows 50000 -write1 10s -write2 5s'
REALDB_FLAGS ?=
bench-realdb: build
	$(GO) run ./bench/realdb -dedupctl bin/dedupctl $(REALDB_FLAGS)
