package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/storage"
	"golang.org/x/term"
)

// secretFlags are where dedupctl finds what opens an encrypted repository.
type secretFlags struct {
	passwordFile    string
	passwordCommand string
	keyFile         string
}

// errNoSecret says where a password comes from.
var errNoSecret = errors.New("no password: set DEDUP_PASSWORD, pass --password-file, --password-command or --key-file, or run on a terminal to be asked")

// secret returns what opens the repository: the contents of --key-file, or
// a password from --password-file, --password-command, $DEDUP_PASSWORD or,
// on a terminal, a prompt (twice with confirm, for a new password).
func (a *app) secret(confirm bool) (chunkstore.Secret, error) {
	switch {
	case a.keys.keyFile != "":
		data, err := os.ReadFile(a.keys.keyFile)
		if err != nil {
			return chunkstore.Secret{}, fmt.Errorf("--key-file: %w", err)
		}
		return chunkstore.Secret{KeyFile: data}, nil
	case a.keys.passwordFile != "":
		return passwordFromFile("--password-file", a.keys.passwordFile)
	case a.keys.passwordCommand != "":
		out, err := exec.Command("sh", "-c", a.keys.passwordCommand).Output()
		if err != nil {
			return chunkstore.Secret{}, fmt.Errorf("--password-command: %w", err)
		}
		return password("--password-command's output", out)
	case os.Getenv("DEDUP_PASSWORD") != "":
		return chunkstore.Secret{Password: []byte(os.Getenv("DEDUP_PASSWORD"))}, nil
	}
	return a.prompt("password", confirm)
}

// openSecret returns the secret of an existing, encrypted repository.
func (a *app) openSecret() (chunkstore.Secret, error) {
	s, err := a.secret(false)
	if errors.Is(err, errNoSecret) {
		return s, usageError{fmt.Errorf("%w: the repository is encrypted, and there is %w", storage.ErrKeyRequired, errNoSecret)}
	}
	return s, err
}

// prompt asks for a password on the terminal, without echo.
func (a *app) prompt(what string, confirm bool) (chunkstore.Secret, error) {
	f, ok := a.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return chunkstore.Secret{}, usageError{errNoSecret}
	}
	read := func(p string) ([]byte, error) {
		fmt.Fprintf(a.stderr, "%s: ", p)
		pw, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.stderr)
		return pw, err
	}
	pw, err := read("enter " + what)
	if err != nil {
		return chunkstore.Secret{}, err
	}
	if confirm {
		again, err := read("enter it again")
		if err != nil {
			return chunkstore.Secret{}, err
		}
		if !bytes.Equal(pw, again) {
			return chunkstore.Secret{}, usagef("the passwords differ")
		}
	}
	return password("the password", pw)
}

// passwordFromFile reads a password from a file, less one final newline.
func passwordFromFile(flag, name string) (chunkstore.Secret, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return chunkstore.Secret{}, fmt.Errorf("%s: %w", flag, err)
	}
	return password(flag+" "+name, data)
}

// password is p less one final newline, refused if empty.
func password(what string, p []byte) (chunkstore.Secret, error) {
	s, err := chunkstore.Password(p)
	if err != nil {
		return s, usagef("%s: %v", what, err)
	}
	return s, nil
}
