// Command dedupctl runs a dedupstore repository from a shell: back up files
// or a stream, list, show, restore, remove, collect garbage, check, and
// measure chunker settings on your own data. Run `dedupctl help`.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/protocol"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/spf13/cobra"
)

// Exit codes, documented in `dedupctl help`.
const (
	exitFailure  = 1
	exitUsage    = 2
	exitNotFound = 3
	exitInUse    = 4
	exitCorrupt  = 5
	exitPartial  = 6
)

// gcPercent replaces Go's default GOGC of 100 unless the environment sets
// GOGC. Most of the heap is buffers held for the whole run (pack builders,
// chunks in flight, compressors), which the default lets the garbage grow
// to match: at 50 a backup's peak RSS falls from about 150 to 115 MiB at no
// measured cost in speed, as garbage is a small part of what a run
// allocates.
const gcPercent = 50

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// app is what every command shares: the global flags and the streams.
type app struct {
	repo      string
	cacheDir  string
	accessKey string // with secretKey, replaces the credentials chain
	secretKey string
	sse       string // s3.Config.ServerSideEncryption
	class     string // s3.Config.StorageClass
	leaseTTL  time.Duration
	keys      secretFlags
	json      bool
	quiet     bool
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
	ran       bool      // a command's RunE started: later errors are not usage errors
	bar       *progress // the progress bar showing, if any

	cpuProfile  string       // --cpu-profile: where to write a CPU profile of the command
	stopProfile func() error // ends the profile, once started
}

// usageError marks errors in how dedupctl was called.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// errDamage is returned when check finds damage.
var errDamage = errors.New("the repository is damaged")

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if a.stopProfile != nil {
		err = cmp.Or(err, a.stopProfile())
	}
	if err == nil {
		return 0
	}
	if !a.ran {
		err = usageError{err}
	}
	fmt.Fprintln(stderr, "dedupctl:", err)
	var ue usageError
	switch {
	case errors.As(err, &ue), errors.Is(err, storage.ErrInvalidName):
		return exitUsage
	case errors.Is(err, storage.ErrNotFound):
		return exitNotFound
	case errors.Is(err, storage.ErrInUse):
		return exitInUse
	case errors.Is(err, storage.ErrCorrupt), errors.Is(err, chunkstore.ErrCorrupt), errors.Is(err, errDamage):
		return exitCorrupt
	case errors.Is(err, errIncomplete):
		return exitPartial
	}
	return exitFailure
}

const helpText = `dedupctl backs up files and streams into a deduplicating repository,
and restores them exactly.

The repository is the directory given by --repo or the DEDUP_REPO
environment variable, or an S3 location such as
s3:http://127.0.0.1:7070/bucket/prefix, with credentials from the standard
chain: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, then
~/.aws/credentials and ~/.aws/config with the profile AWS_PROFILE, then the
IAM role of the service account, ECS task or EC2 instance. An S3 repository keeps its
index in --cache-dir, brings it up to date with what other agents wrote,
and rebuilds it from the objects when it is missing. Many agents may back
up into one S3 repository at once; see how collection
works there (dedupctl help gc). dedupctl init creates a repository,
encrypted unless --no-encryption: its password comes from --password-file,
--password-command or DEDUP_PASSWORD, or a prompt on a terminal, or its key
file from --key-file (dedupctl help key).

Exit codes:
  0  success
  1  failure (including an interrupted backup, which is aborted, and a
     wrong password or key file)
  2  usage error: unknown command or flag, bad arguments or names, no
     password for an encrypted repository
  3  not found: no such repository, backup or file
  4  repository in use: another process's collection holds its lock (the
     lock of a collection that was killed expires after 10 minutes)
  5  corrupt data found (by check, or while reading); a restore that
     could not restore some files (it restores all the others)
  6  the backup ended, but without some files it could not read (each
     named on stderr)

Every command that prints data takes --json for a stable, machine-readable
form; progress bars appear on a terminal only, and --quiet hides them.`

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "dedupctl",
		Short:         "Deduplicating backups of databases and files",
		Long:          helpText,
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       buildVersion().String(),
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			a.ran = true
			if a.repo == "" {
				a.repo = os.Getenv("DEDUP_REPO")
			}
			return a.startProfile()
		},
	}
	root.PersistentFlags().StringVar(&a.repo, "repo", "", "repository: a directory, or s3:http(s)://HOST:PORT/BUCKET[/PREFIX] (default $DEDUP_REPO)")
	root.PersistentFlags().StringVar(&a.cacheDir, "cache-dir", "", "where an s3: repository keeps its index (default the user cache directory)")
	root.PersistentFlags().StringVar(&a.accessKey, "s3-access-key-id", "", "S3 access key, instead of the credentials chain (see dedupctl help)")
	root.PersistentFlags().StringVar(&a.secretKey, "s3-secret-access-key", "", "S3 secret key, with --s3-access-key-id (default $AWS_SECRET_ACCESS_KEY; the variable keeps it out of the process list)")
	root.PersistentFlags().StringVar(&a.sse, "s3-server-side-encryption", "", "encryption the S3 server applies: AES256 (SSE-S3), aws:kms[:KEY-ID] (SSE-KMS) or sse_c:FILE (SSE-C, a 32-byte key; https only)")
	root.PersistentFlags().StringVar(&a.class, "s3-storage-class", "", "S3 storage class of the objects written, such as STANDARD_IA")
	root.PersistentFlags().DurationVar(&a.leaseTTL, "lease-ttl", protocol.DefaultLeaseTTL, "how long the lease of a process with backups running, and a collection's lock, outlive it; every process of a repository must use the same")
	root.PersistentFlags().StringVar(&a.keys.passwordFile, "password-file", "", "read the repository's password from `FILE` (default $DEDUP_PASSWORD, or a prompt on a terminal)")
	root.PersistentFlags().StringVar(&a.keys.passwordCommand, "password-command", "", "run `COMMAND` (with sh -c) and use its output as the repository's password")
	root.PersistentFlags().StringVar(&a.keys.keyFile, "key-file", "", "open the repository with the key file `FILE` instead of a password")
	root.PersistentFlags().BoolVar(&a.json, "json", false, "print machine-readable JSON")
	root.PersistentFlags().BoolVarP(&a.quiet, "quiet", "q", false, "print no progress")
	root.PersistentFlags().StringVar(&a.cpuProfile, "cpu-profile", "", "write a CPU profile of the command to `FILE`, for go tool pprof")
	root.PersistentFlags().MarkHidden("cpu-profile")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError{err} })
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(
		a.initCommand(), a.backupCommand(), a.lsCommand(), a.showCommand(),
		a.restoreCommand(), a.catCommand(), a.diffCommand(), a.rmCommand(), a.gcCommand(),
		a.checkCommand(), a.repairCommand(), a.statsCommand(), a.benchCommand(), a.indexCommand(),
		a.versionCommand(), a.forgetCommand(), a.keyCommand(),
	)
	return root
}

// startProfile starts the CPU profile --cpu-profile asks for.
func (a *app) startProfile() error {
	if a.cpuProfile == "" {
		return nil
	}
	f, err := os.Create(a.cpuProfile)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	a.stopProfile = func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}
	return nil
}

// splitBackup splits "DIR/NAME" at its last slash.
func splitBackup(arg string) (dir, name string, err error) {
	i := strings.LastIndexByte(arg, '/')
	if i <= 0 || i == len(arg)-1 {
		return "", "", usagef("%q: want DIR/NAME, such as commerce/0/2026-11-25", arg)
	}
	dir, name = arg[:i], arg[i+1:]
	return dir, name, dedup.ValidateBackupName(dir, name)
}

// exactArgs is cobra.ExactArgs, reporting a usage error.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %s", cmd.Name(), what)
		}
		return nil
	}
}

func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef("%s takes %s", cmd.Name(), what)
		}
		return nil
	}
}
