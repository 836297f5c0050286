// Package s3 is a chunkstore.Backend on S3-compatible object storage, through
// minio-go (which retries failed requests and uploads large objects in
// parts). It passes chunkstore/backendtest against a real server.
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/encrypt"
)

// Config locates a repository on an S3 server.
type Config struct {
	Endpoint string // host:port
	Secure   bool   // https
	Bucket   string
	Prefix   string // "" or ends in "/"
	// AccessKey and SecretKey, if set, are the credentials. Otherwise they
	// come from the standard chain, the first that has them: the variables
	// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; the
	// shared files (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, and
	// AWS_CONFIG_FILE or ~/.aws/config) with the profile AWS_PROFILE; an IAM
	// role: of a service account (AWS_WEB_IDENTITY_TOKEN_FILE and
	// AWS_ROLE_ARN), of an ECS task, or of the EC2 instance.
	AccessKey, SecretKey string
	// ServerSideEncryption is what the server encrypts objects with, as
	// Vitess's S3 storage takes it: "" (the bucket's default), "AES256"
	// (SSE-S3), "aws:kms" or "aws:kms:KEY-ID" (SSE-KMS), or "sse_c:FILE"
	// (SSE-C, with the 32-byte key in FILE; over https only).
	ServerSideEncryption string
	// StorageClass, if set, is the storage class of every object written,
	// such as STANDARD_IA.
	StorageClass string
	// Transport, if set, carries the requests (tests inject faults here).
	Transport http.RoundTripper
}

// ParseLocation reads a location such as s3:http://127.0.0.1:7070/bucket/prefix.
func ParseLocation(loc string) (Config, error) {
	rest, ok := strings.CutPrefix(loc, "s3:")
	u, err := url.Parse(rest)
	if !ok || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Config{}, fmt.Errorf("s3: location %q: want s3:http(s)://HOST:PORT/BUCKET[/PREFIX]", loc)
	}
	bucket, prefix, _ := strings.Cut(strings.Trim(u.Path, "/"), "/")
	if bucket == "" {
		return Config{}, fmt.Errorf("s3: location %q names no bucket", loc)
	}
	if prefix != "" {
		prefix += "/"
	}
	return Config{Endpoint: u.Host, Secure: u.Scheme == "https", Bucket: bucket, Prefix: prefix}, nil
}

// Backend implements chunkstore.Backend. Objects are named Prefix + name.
type Backend struct {
	client *minio.Client
	bucket string
	prefix string
	sse    encrypt.ServerSide // nil: the bucket's default
	class  string
}

// New connects to the server in cfg. It does not create the bucket.
func New(cfg Config) (*Backend, error) {
	creds := credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	if cfg.AccessKey == "" && cfg.SecretKey == "" {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{},
			&credentials.IAM{},
		})
	}
	sse, err := serverSide(cfg.ServerSideEncryption)
	if err != nil {
		return nil, err
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:     creds,
		Secure:    cfg.Secure,
		Transport: cfg.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	return &Backend{client: client, bucket: cfg.Bucket, prefix: cfg.Prefix, sse: sse, class: cfg.StorageClass}, nil
}

// serverSide reads Config.ServerSideEncryption.
func serverSide(s string) (encrypt.ServerSide, error) {
	switch {
	case s == "":
		return nil, nil
	case s == "AES256":
		return encrypt.NewSSE(), nil
	case s == "aws:kms" || strings.HasPrefix(s, "aws:kms:"):
		sse, err := encrypt.NewSSEKMS(strings.TrimPrefix(strings.TrimPrefix(s, "aws:kms"), ":"), nil)
		if err != nil {
			return nil, fmt.Errorf("s3: server-side encryption %q: %w", s, err)
		}
		return sse, nil
	case strings.HasPrefix(s, "sse_c:"):
		key, err := os.ReadFile(strings.TrimPrefix(s, "sse_c:"))
		if err == nil {
			var sse encrypt.ServerSide
			if sse, err = encrypt.NewSSEC(key); err == nil {
				return sse, nil
			}
		}
		return nil, fmt.Errorf("s3: server-side encryption with a customer key: %w (want a file of 32 bytes)", err)
	}
	return nil, fmt.Errorf("s3: server-side encryption %q: want AES256, aws:kms[:KEY-ID] or sse_c:FILE", s)
}

// readSSE is what reads must send: the key of SSE-C; nothing for the
// encryption the server keeps the keys of.
func (b *Backend) readSSE() encrypt.ServerSide {
	if b.sse != nil && b.sse.Type() == encrypt.SSEC {
		return b.sse
	}
	return nil
}

// Client is the minio client, for tests that create buckets.
func (b *Backend) Client() *minio.Client { return b.client }

// Bucket is the bucket the backend stores into.
func (b *Backend) Bucket() string { return b.bucket }

func (b *Backend) key(name string) (string, error) {
	if err := chunkstore.CheckObjectName(name); err != nil {
		return "", err
	}
	return b.prefix + name, nil
}

// notExist reports an error for a missing object; in a missing bucket,
// every object is missing.
func notExist(err error) bool {
	code := minio.ToErrorResponse(err).Code
	return code == "NoSuchKey" || code == "NotFound" || code == "NoSuchBucket"
}

// MakeBucket creates the bucket unless it exists, as dedupctl init does.
func (b *Backend) MakeBucket(ctx context.Context) error {
	exists, err := b.client.BucketExists(ctx, b.bucket)
	if err == nil && !exists {
		err = b.client.MakeBucket(ctx, b.bucket, minio.MakeBucketOptions{})
	}
	if err != nil {
		return fmt.Errorf("s3: create bucket %s: %w", b.bucket, err)
	}
	return nil
}

// Put implements chunkstore.Backend. An object of known length (a
// *bytes.Reader, as packs are) goes up in one request or in parts; S3 makes
// it visible whole or not at all.
func (b *Backend) Put(ctx context.Context, name string, r io.Reader) error {
	return b.put(ctx, name, r, minio.PutObjectOptions{})
}

// Create implements chunkstore.Backend with a conditional PUT
// (If-None-Match: *). A server that ignores the condition replaces the
// object instead; callers re-read what they created.
func (b *Backend) Create(ctx context.Context, name string, r io.Reader) error {
	var opts minio.PutObjectOptions
	opts.SetMatchETagExcept("*")
	err := b.put(ctx, name, r, opts)
	if code := minio.ToErrorResponse(errors.Unwrap(err)).Code; code == "PreconditionFailed" {
		return fmt.Errorf("s3: create %s: %w", name, chunkstore.ErrExist)
	}
	return err
}

// singlePutMax is the largest stream put puts in one request.
const singlePutMax = 1 << 20

// Versity's gateway on a POSIX file system keeps objects as files, and a
// delete removes the directories it empties: a put whose directory a delete
// beside it removes between the gateway making it and linking the object
// there fails with ExistingObjectIsDirectory, and writes nothing. Object
// names here never name a directory, so that answer can only be the race,
// and put tries again, up to racedPutTries times in all, if it can send the
// body again.
const racedPutTries = 6

func (b *Backend) put(ctx context.Context, name string, r io.Reader, opts minio.PutObjectOptions) error {
	key, err := b.key(name)
	if err != nil {
		return err
	}
	size := int64(-1)                            // a stream: a multipart upload
	if l, ok := r.(interface{ Len() int }); ok { // bytes and strings readers
		size = int64(l.Len())
	} else {
		// A short stream (most manifests) goes in one PUT: one request
		// instead of three.
		head, err := io.ReadAll(io.LimitReader(r, singlePutMax+1))
		if err != nil {
			return fmt.Errorf("s3: put %s: %w", name, err)
		}
		if len(head) <= singlePutMax {
			r, size = bytes.NewReader(head), int64(len(head))
		} else {
			r = io.MultiReader(bytes.NewReader(head), r)
		}
	}
	opts.PartSize, opts.SendContentMd5 = 16<<20, true
	opts.ServerSideEncryption, opts.StorageClass = b.sse, b.class
	body, replayable := r.(io.Seeker)
	var start int64
	if replayable {
		start, err = body.Seek(0, io.SeekCurrent)
		replayable = err == nil
	}
	for try := 1; ; try++ {
		_, err := b.client.PutObject(ctx, b.bucket, key, r, size, opts)
		if err == nil {
			return nil
		}
		if !replayable || try == racedPutTries || minio.ToErrorResponse(err).Code != "ExistingObjectIsDirectory" {
			return fmt.Errorf("s3: put %s: %w", name, err)
		}
		if _, err := body.Seek(start, io.SeekStart); err != nil {
			return fmt.Errorf("s3: put %s: %w", name, err)
		}
		select {
		case <-time.After(time.Duration(try) * 10 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("s3: put %s: %w", name, ctx.Err())
		}
	}
}

// Get implements chunkstore.Backend.
func (b *Backend) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	key, err := b.key(name)
	if err != nil {
		return nil, err
	}
	if length == 0 { // no range request can ask for nothing: check the object and the offset
		info, err := b.client.StatObject(ctx, b.bucket, key, minio.StatObjectOptions{ServerSideEncryption: b.readSSE()})
		if err != nil {
			return nil, b.getErr(name, err)
		}
		if offset > info.Size {
			return nil, fmt.Errorf("s3: get %s: offset %d past the end (%d bytes)", name, offset, info.Size)
		}
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	opts := minio.GetObjectOptions{ServerSideEncryption: b.readSSE()}
	switch {
	case length > 0:
		err = opts.SetRange(offset, offset+length-1)
	case offset > 0:
		err = opts.SetRange(offset, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("s3: get %s: %w", name, err)
	}
	obj, err := b.client.GetObject(ctx, b.bucket, key, opts)
	if err != nil {
		return nil, b.getErr(name, err)
	}
	// The first read sends the request, so that a missing object shows
	// here. (A Stat would send a HEAD first, and the GET after it would
	// fail if the object was replaced in between.)
	var first [1]byte
	n, err := obj.Read(first[:])
	for n == 0 && err == nil {
		n, err = obj.Read(first[:])
	}
	if err != nil && err != io.EOF {
		obj.Close()
		return nil, b.getErr(name, err)
	}
	r := &exact{obj: obj, left: length, name: name}
	if n == 0 {
		return r, nil
	}
	if length > 0 {
		r.left--
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(first[:1]), r), r}, nil
}

func (b *Backend) getErr(name string, err error) error {
	if notExist(err) {
		return fmt.Errorf("s3: get %s: %w", name, chunkstore.ErrNotExist)
	}
	return fmt.Errorf("s3: get %s: %w", name, err)
}

// exact reports a range that ends early as an error: S3 answers a range
// past the end of an object with the bytes it has. It also reports an
// object deleted while it was read as ErrNotExist.
type exact struct {
	obj  *minio.Object
	left int64 // negative: read to the end
	name string
}

func (e *exact) Read(p []byte) (int, error) {
	if e.left == 0 {
		return 0, io.EOF
	}
	if e.left > 0 {
		p = p[:min(int64(len(p)), e.left)]
	}
	n, err := e.obj.Read(p)
	if e.left > 0 {
		e.left -= int64(n)
	}
	switch {
	case err == io.EOF && e.left > 0:
		err = fmt.Errorf("s3: get %s: object shorter than requested range: %w", e.name, io.ErrUnexpectedEOF)
	case err == nil && e.left == 0:
		err = io.EOF
	case err != nil && err != io.EOF && notExist(err):
		err = fmt.Errorf("s3: get %s: %w", e.name, chunkstore.ErrNotExist)
	}
	return n, err
}

func (e *exact) Close() error { return e.obj.Close() }

// List implements chunkstore.Backend.
func (b *Backend) List(ctx context.Context, prefix, after string, fn func(chunkstore.ObjectInfo) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := minio.ListObjectsOptions{Prefix: b.prefix + prefix, Recursive: true}
	if after != "" {
		opts.StartAfter = b.prefix + after
	}
	for obj := range b.client.ListObjects(ctx, b.bucket, opts) {
		if obj.Err != nil {
			return fmt.Errorf("s3: list %q: %w", prefix, obj.Err)
		}
		if err := fn(chunkstore.ObjectInfo{Name: strings.TrimPrefix(obj.Key, b.prefix), Size: obj.Size, ModTime: obj.LastModified}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Delete implements chunkstore.Backend. S3 deletes a missing object without
// complaint.
func (b *Backend) Delete(ctx context.Context, name string) error {
	key, err := b.key(name)
	if err != nil {
		return err
	}
	if err := b.client.RemoveObject(ctx, b.bucket, key, minio.RemoveObjectOptions{}); err != nil && !notExist(err) {
		return fmt.Errorf("s3: delete %s: %w", name, err)
	}
	return nil
}

// uploadSep joins an object name and an upload ID in the names
// ListPartial gives.
const uploadSep = "?uploadId="

// ListPartial implements chunkstore.Backend: incomplete multipart uploads,
// with the time each was initiated.
func (b *Backend) ListPartial(ctx context.Context, fn func(chunkstore.ObjectInfo) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for u := range b.client.ListIncompleteUploads(ctx, b.bucket, b.prefix, true) {
		if minio.ToErrorResponse(u.Err).Code == "NoSuchUpload" {
			break // a listing names no upload: a server (gofakes3) says so when there is none
		}
		if u.Err != nil {
			return fmt.Errorf("s3: list incomplete uploads: %w", u.Err)
		}
		name := strings.TrimPrefix(u.Key, b.prefix) + uploadSep + u.UploadID
		if err := fn(chunkstore.ObjectInfo{Name: name, Size: u.Size, ModTime: u.Initiated}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// DeletePartial implements chunkstore.Backend: it aborts the upload.
func (b *Backend) DeletePartial(ctx context.Context, name string) error {
	object, id, ok := strings.Cut(name, uploadSep)
	key, err := b.key(object)
	if err != nil || !ok {
		return fmt.Errorf("s3: %q is not an incomplete upload", name)
	}
	err = minio.Core{Client: b.client}.AbortMultipartUpload(ctx, b.bucket, key, id)
	if err != nil && minio.ToErrorResponse(err).Code != "NoSuchUpload" {
		return fmt.Errorf("s3: abort upload %s: %w", name, err)
	}
	return nil
}

var _ chunkstore.Backend = (*Backend)(nil)
