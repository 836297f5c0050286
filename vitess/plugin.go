package vitess

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/s3"
	"github.com/dedupstore/dedupstore/protocol"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/spf13/pflag"
	"vitess.io/vitess/go/vt/log"
	"vitess.io/vitess/go/vt/mysqlctl/backupstorage"
	"vitess.io/vitess/go/vt/servenv"
	"vitess.io/vitess/go/vt/utils"
)

// Flags of the registered "dedup" storage, read on its first use.
type flags struct {
	root     string
	cacheDir string
	sse      string
	class    string
	leaseTTL time.Duration
	password string // a file
}

func (f *flags) register(fs *pflag.FlagSet) {
	utils.SetFlagStringVar(fs, &f.root, "dedup-backup-storage-root", "", "repository of the dedup backup storage: a directory (created on first use if missing or empty), or s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX] with credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ~/.aws with AWS_PROFILE, or the IAM role of the service account, ECS task or EC2 instance")
	utils.SetFlagStringVar(fs, &f.cacheDir, "dedup-cache-dir", "", "where an s3: repository keeps this process's index cache (default the user cache directory, else the temporary directory)")
	utils.SetFlagStringVar(fs, &f.sse, "dedup-s3-server-side-encryption", "", "encryption the S3 server applies: AES256, aws:kms[:KEY-ID] or sse_c:FILE (a 32-byte key; https only)")
	utils.SetFlagStringVar(fs, &f.class, "dedup-s3-storage-class", "", "S3 storage class of the objects written, such as STANDARD_IA")
	utils.SetFlagStringVar(fs, &f.password, "dedup-password-file", "", "file holding the password of the encrypted repository; a repository created with it is encrypted, one created without is not")
	utils.SetFlagDurationVar(fs, &f.leaseTTL, "dedup-lease-ttl", protocol.DefaultLeaseTTL, "how long a dead process's backups hold back collections of the repository; every process using the repository must use the same")
}

var registered flags

func init() {
	for _, cmd := range []string{"vtbackup", "vtctl", "vtctld", "vttablet"} {
		servenv.OnParseFor(cmd, registered.register)
	}
	backupstorage.BackupStorageMap["dedup"] = newStorage(registered.open)
}

// open makes the storage the flags describe.
func (f *flags) open() (storage.BackupStorage, error) {
	if f.root == "" {
		return nil, errors.New("dedup backup storage: no repository: set --dedup-backup-storage-root")
	}
	opts := dedup.Options{
		LeaseTTL: f.leaseTTL,
		Logf:     func(format string, args ...any) { log.Warn(fmt.Sprintf(format, args...)) },
	}
	if f.password != "" {
		data, err := os.ReadFile(f.password)
		if err != nil {
			return nil, fmt.Errorf("--dedup-password-file: %w", err)
		}
		if opts.Secret, err = chunkstore.Password(data); err != nil {
			return nil, fmt.Errorf("--dedup-password-file %s: %w", f.password, err)
		}
	}
	if !strings.HasPrefix(f.root, "s3:") {
		return dedup.New(f.root, opts), nil
	}
	cfg, err := s3.ParseLocation(f.root)
	if err != nil {
		return nil, fmt.Errorf("--dedup-backup-storage-root: %w", err)
	}
	cfg.ServerSideEncryption, cfg.StorageClass = f.sse, f.class
	if opts.Backend, err = s3.New(cfg); err != nil {
		return nil, err
	}
	cache := f.cacheDir
	if cache == "" {
		if cache, err = os.UserCacheDir(); err != nil {
			cache = os.TempDir()
		}
		cache = filepath.Join(cache, "dedupstore")
	}
	return dedup.New(cache, opts), nil
}
