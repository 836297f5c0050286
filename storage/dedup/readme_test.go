package dedup_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The README's "Using it from Go" program builds and runs as it is written
// there.
func TestREADMEExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, found := strings.Cut(string(readme), "## Using it from Go\n")
	_, code, found2 := strings.Cut(section, "```go\n")
	code, _, found3 := strings.Cut(code, "```\n")
	if !found || !found2 || !found3 || !strings.HasPrefix(code, "package main") {
		t.Fatal("README.md has no Go program under \"Using it from Go\"")
	}
	// Inside the module, so that its imports resolve to this tree.
	dir, err := os.MkdirTemp("..", ".readme-example-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	input := filepath.Join(t.TempDir(), "input")
	os.WriteFile(input, []byte(strings.Repeat("readme example ", 10000)), 0o644)
	cmd := exec.Command("go", "run", ".", filepath.Join(t.TempDir(), "repo"), input)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "backed up and read back 150000 bytes, identical: true\n" {
		t.Fatalf("the README's program: %v\n%s", err, out)
	}
}
