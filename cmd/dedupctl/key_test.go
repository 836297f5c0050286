package main_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dedupstore/dedupstore/internal/dataset"
)

// A new repository is encrypted unless --no-encryption says otherwise, and
// init says which; nothing backed up can be found in its files; it opens
// with a password from the environment, a file, a command or a key file,
// and never with a wrong one (exit 1) or none (exit 2).
func TestEncryptionCommand(t *testing.T) {
	work := t.TempDir()
	repo := filepath.Join(work, "repo")
	noPassword := []string{"DEDUP_PASSWORD="}
	r := dedupctlEnv(t, repo, noPassword, nil, "init")
	fails(t, r, 2, "--no-encryption creates an unencrypted one")
	if out := ok(t, repo, "init"); !strings.Contains(out, "encrypted (aes-256-gcm)") {
		t.Errorf("init says: %s", out)
	}
	plainRepo := filepath.Join(work, "plain")
	if out := ok(t, plainRepo, "init", "--no-encryption"); !strings.Contains(out, "UNENCRYPTED") {
		t.Errorf("init --no-encryption says: %s", out)
	}
	if out := ok(t, plainRepo, "stats"); !strings.Contains(out, "UNENCRYPTED") {
		t.Errorf("stats of an unencrypted repository: %s", out)
	}

	marker := []byte("CUSTOMER-CARD-4111111111111111;")
	data := append(bytes.Repeat(marker, 20000), dataset.Pages(3, 64)...)
	if r := dedupctl(t, repo, bytes.NewReader(data), "backup", "db/0/b1", "--stdin", "--name", "dump.sql"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	filepath.WalkDir(repo, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.Contains(path, string(filepath.Separator)+"index"+string(filepath.Separator)) {
			return err
		}
		content, _ := os.ReadFile(path)
		if bytes.Contains(content, marker[:16]) || bytes.Contains(content, []byte("dump.sql")) {
			t.Errorf("%s holds backed-up bytes or a file name in plain", path)
		}
		return nil
	})
	var st struct{ Encryption string }
	okJSON(t, repo, &st, "stats")
	if st.Encryption != "aes-256-gcm" {
		t.Errorf("stats: encryption %q", st.Encryption)
	}

	pwFile := filepath.Join(work, "pw")
	os.WriteFile(pwFile, []byte("test password\n"), 0o600)
	wrongFile := filepath.Join(work, "wrong")
	os.WriteFile(wrongFile, []byte("guess\n"), 0o600)
	for _, env := range [][]string{nil, {"DEDUP_PASSWORD=", "X=1"}} {
		args := []string{"cat", "db/0/b1", "dump.sql"}
		if env != nil {
			args = append(args, "--password-file", pwFile)
		}
		if r := dedupctlEnv(t, repo, env, nil, args...); r.code != 0 || r.stdout != string(data) {
			t.Fatalf("cat %v: exit %d, %d bytes: %s", args, r.code, len(r.stdout), r.stderr)
		}
	}
	if r := dedupctlEnv(t, repo, noPassword, nil, "ls", "--password-command", "echo 'test password'"); r.code != 0 {
		t.Errorf("--password-command: exit %d: %s", r.code, r.stderr)
	}
	fails(t, dedupctl(t, repo, nil, "cat", "db/0/b1", "dump.sql", "--password-file", wrongFile), 1, "wrong key")
	fails(t, dedupctlEnv(t, repo, noPassword, nil, "ls"), 2, "key required")

	// Keys: add a password and a key file, change the password, remove.
	newPw := filepath.Join(work, "new")
	os.WriteFile(newPw, []byte("second password\n"), 0o600)
	var added struct{ ID, KDF string }
	okJSON(t, repo, &added, "key", "add", "--new-password-file", newPw)
	keyFile := filepath.Join(work, "keyfile")
	var addedFile struct{ ID, KDF string }
	okJSON(t, repo, &addedFile, "key", "add", "--new-key-file", keyFile)
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 || addedFile.KDF != "keyfile" {
		t.Fatalf("key file: %v, %v, %+v", fi, err, addedFile)
	}
	fails(t, dedupctl(t, repo, nil, "key", "add", "--new-key-file", keyFile), 1, "exists")
	var keys []struct {
		ID      string
		KDF     string
		Current bool
	}
	okJSON(t, repo, &keys, "key", "list", "--key-file", keyFile)
	if len(keys) != 3 || !keys[2].Current || keys[2].ID != addedFile.ID {
		t.Fatalf("key list: %+v", keys)
	}
	fails(t, dedupctl(t, repo, nil, "key", "remove", keys[2].ID, "--key-file", keyFile), 1, "opened the repository with")
	var changed struct{ ID, Removed string }
	okJSON(t, repo, &changed, "key", "passwd", "--password-file", newPw, "--new-password-file", wrongFile)
	if changed.Removed != added.ID {
		t.Errorf("passwd removed %q, want %q", changed.Removed, added.ID)
	}
	fails(t, dedupctl(t, repo, nil, "ls", "--password-file", newPw), 1, "wrong key")
	ok(t, repo, "ls", "--password-file", wrongFile) // the changed password
	ok(t, repo, "key", "remove", addedFile.ID)
	fails(t, dedupctl(t, repo, nil, "ls", "--key-file", keyFile), 1, "wrong key")
	fails(t, dedupctl(t, plainRepo, nil, "key", "list"), 1, "not encrypted")
}

// A flipped bit in a pack, a manifest or the config of an encrypted
// repository is found: exit 5, naming the object.
func TestEncryptionTamperCommand(t *testing.T) {
	repo, _ := newRepo(t)
	data := dataset.Pages(4, 64)
	if r := dedupctl(t, repo, bytes.NewReader(data), "backup", "db/0/b1", "--stdin", "--name", "f"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	flip := func(path string, at func(n int) int) func() {
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		damaged := bytes.Clone(orig)
		damaged[at(len(orig))] ^= 1
		os.WriteFile(path, damaged, 0o644)
		return func() { os.WriteFile(path, orig, 0o644) }
	}
	packs, _ := filepath.Glob(filepath.Join(repo, "data", "*", "*"))
	if len(packs) != 1 {
		t.Fatalf("%d packs", len(packs))
	}
	pack := filepath.Base(packs[0])
	restore := flip(packs[0], func(n int) int { return 200 }) // inside the first blob's sealed bytes
	r := dedupctl(t, repo, nil, "cat", "db/0/b1", "f")
	if r.code != 5 || !strings.Contains(r.stderr, pack) {
		t.Errorf("cat of a flipped blob: exit %d: %s", r.code, r.stderr)
	}
	restore()
	restore = flip(packs[0], func(n int) int { return n - 100 }) // in the sealed trailer
	if r := dedupctl(t, repo, nil, "check"); r.code != 5 || !strings.Contains(r.stdout, pack) {
		t.Errorf("check of a flipped trailer: exit %d: %s", r.code, r.stdout)
	}
	restore()
	manifest := filepath.Join(repo, "manifests", "db%2F0", "b1")
	restore = flip(manifest, func(n int) int { return n / 2 })
	if r := dedupctl(t, repo, nil, "check"); r.code != 5 || !strings.Contains(r.stdout, "manifests/db%2F0/b1") {
		t.Errorf("check of a flipped manifest: exit %d: %s", r.code, r.stdout)
	}
	restore()
	ok(t, repo, "check", "--read-data")
	config := filepath.Join(repo, "config")
	orig, _ := os.ReadFile(config)
	var env map[string]any
	json.Unmarshal(orig, &env)
	sealed := []byte(env["sealed"].(string))
	sealed[10] = map[bool]byte{true: 'A', false: 'B'}[sealed[10] != 'A']
	env["sealed"] = string(sealed)
	damaged, _ := json.Marshal(env)
	os.WriteFile(config, damaged, 0o644)
	fails(t, dedupctl(t, repo, nil, "ls"), 5, "config")
}
