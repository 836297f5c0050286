package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/chunkstore/s3"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

// location resolves --repo: a local directory holds its objects and its
// index caches; an s3: location keeps its objects on the server and its
// index caches in the cache directory, rebuilt from the objects when
// missing.
func (a *app) location() (root string, backend chunkstore.Backend, err error) {
	if a.repo == "" {
		return "", nil, usagef("no repository: pass --repo or set DEDUP_REPO")
	}
	if !a.onS3() {
		return a.repo, local.New(a.repo), nil
	}
	cfg, err := s3.ParseLocation(a.repo)
	if err != nil {
		return "", nil, usageError{err}
	}
	if a.accessKey != "" || a.secretKey != "" {
		cfg.AccessKey = cmp.Or(a.accessKey, os.Getenv("AWS_ACCESS_KEY_ID"))
		cfg.SecretKey = cmp.Or(a.secretKey, os.Getenv("AWS_SECRET_ACCESS_KEY"))
	}
	cfg.ServerSideEncryption, cfg.StorageClass = a.sse, a.class
	b, err := s3.New(cfg)
	if err != nil {
		return "", nil, err
	}
	cache := a.cacheDir
	if cache == "" {
		if cache, err = os.UserCacheDir(); err != nil {
			return "", nil, err
		}
		cache = filepath.Join(cache, "dedupstore")
	}
	return cache, b, nil // the storage keeps each repository's index caches apart, by its ID
}

// open opens the existing repository.
func (a *app) open() (*dedup.Storage, error) {
	root, b, err := a.location()
	if err != nil {
		return nil, err
	}
	opts := a.options(b)
	_, err = chunkstore.ReadConfig(context.Background(), b, chunkstore.Secret{})
	switch {
	case errors.Is(err, chunkstore.ErrNotExist):
		return nil, fmt.Errorf("no repository at %s (dedupctl init creates one): %w", a.repo, storage.ErrNotFound)
	case errors.Is(err, chunkstore.ErrKeyRequired):
		if opts.Secret, err = a.openSecret(); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	}
	return dedup.New(root, opts), nil
}

// openStore opens the existing repository's chunk store alone, for what
// needs neither backups nor the index: its keys.
func (a *app) openStore(ctx context.Context) (*chunkstore.Store, error) {
	_, b, err := a.location()
	if err != nil {
		return nil, err
	}
	var secret chunkstore.Secret
	_, err = chunkstore.ReadConfig(ctx, b, secret)
	if errors.Is(err, chunkstore.ErrKeyRequired) {
		if secret, err = a.openSecret(); err != nil {
			return nil, err
		}
	}
	if errors.Is(err, chunkstore.ErrNotExist) {
		return nil, fmt.Errorf("no repository at %s (dedupctl init creates one): %w", a.repo, storage.ErrNotFound)
	}
	store, err := chunkstore.Open(ctx, b, secret)
	if errors.Is(err, chunkstore.ErrWrongKey) {
		err = fmt.Errorf("%w: %w", storage.ErrWrongKey, err)
	}
	return store, err
}

// withStorage opens the existing repository, runs fn on it, and closes it.
func (a *app) withStorage(fn func(*dedup.Storage) error) error {
	s, err := a.open()
	if err != nil {
		return err
	}
	defer s.Close()
	return fn(s)
}

// onS3 reports whether --repo is on S3.
func (a *app) onS3() bool { return strings.HasPrefix(a.repo, "s3:") }

// options are the storage options for the repository on backend b: the
// storage's own local directory backend keeps the index caches beside the
// objects, where the library keeps them too.
func (a *app) options(b chunkstore.Backend) dedup.Options {
	opts := dedup.Options{Logf: a.warn, LeaseTTL: a.leaseTTL}
	if a.onS3() {
		opts.Backend = b
	}
	return opts
}
