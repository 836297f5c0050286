package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/spf13/cobra"
)

func (a *app) keyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Manage the passwords and key files that open an encrypted repository",
		Long: `An encrypted repository's master key is stored once per key: wrapped by a
key derived from a password (argon2id) or from a key file. Any key opens
the repository; adding or removing one re-encrypts nothing. Every command
opens the repository with a key it has (--password-file, --password-command,
$DEDUP_PASSWORD, --key-file, or a prompt on a terminal).`,
	}
	var newPasswordFile, newKeyFile string
	newSecretFlags := func(c *cobra.Command) {
		c.Flags().StringVar(&newPasswordFile, "new-password-file", "", "read the new password from `FILE` (default: asked twice on a terminal)")
		c.Flags().StringVar(&newKeyFile, "new-key-file", "", "write a new key file, 32 random bytes in hex, to `FILE` (which must not exist) and add it instead of a password")
	}
	// newSecret returns the new key's secret: from --new-password-file, a
	// new key file, or the terminal.
	newSecret := func() (chunkstore.Secret, error) {
		switch {
		case newPasswordFile != "" && newKeyFile != "":
			return chunkstore.Secret{}, usagef("pass --new-password-file or --new-key-file, not both")
		case newPasswordFile != "":
			return passwordFromFile("--new-password-file", newPasswordFile)
		case newKeyFile != "":
			data := chunkstore.NewKeyFile()
			f, err := os.OpenFile(newKeyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return chunkstore.Secret{}, fmt.Errorf("--new-key-file: %w", err)
			}
			if _, err := f.Write(data); err != nil {
				f.Close()
				return chunkstore.Secret{}, err
			}
			if err := f.Sync(); err != nil {
				f.Close()
				return chunkstore.Secret{}, err
			}
			return chunkstore.Secret{KeyFile: data}, f.Close()
		}
		return a.prompt("the new password", true)
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List the keys, marking the one used",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd.Context(), func(ctx context.Context, s *chunkstore.Store) error {
				slots, err := chunkstore.Keys(ctx, s.Backend())
				if err != nil {
					return err
				}
				out := []keyJSON{}
				var rows [][]string
				for _, k := range slots {
					j := newKeyJSON(k)
					j.Current = k.ID == s.KeyID()
					out = append(out, j)
					mark := " "
					if k.ID == s.KeyID() {
						mark = "*"
					}
					rows = append(rows, []string{mark + k.ID, when(k.Created), k.Host, k.KDF})
				}
				if a.json {
					return a.printJSON(out)
				}
				a.table(" ID\tCREATED\tHOST\tKIND", rows)
				a.info("* the key used now")
				return nil
			})
		},
	}
	// addKey adds a key (replace: in place of the one used) and prints it.
	addKey := func(cmd *cobra.Command, replace bool) error {
		return a.withStore(cmd.Context(), func(ctx context.Context, s *chunkstore.Store) error {
			secret, err := newSecret()
			if err != nil {
				return err
			}
			var k chunkstore.KeySlot
			var old string
			if replace {
				k, old, err = s.ChangeKey(ctx, secret)
			} else {
				k, err = s.AddKey(ctx, secret)
			}
			if err != nil {
				return err
			}
			if a.json {
				out := newKeyJSON(k)
				out.Removed = old
				return a.printJSON(out)
			}
			if old != "" {
				a.info("added key %s (%s) and removed key %s", k.ID, k.KDF, old)
			} else {
				a.info("added key %s (%s)", k.ID, k.KDF)
			}
			return nil
		})
	}
	add := &cobra.Command{
		Use:   "add",
		Short: "Add a password or a key file",
		Args:  exactArgs(0, "no arguments"),
		RunE:  func(cmd *cobra.Command, args []string) error { return addKey(cmd, false) },
	}
	newSecretFlags(add)
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a key (not the one used to open the repository)",
		Args:  exactArgs(1, "the ID of the key to remove (dedupctl key list)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd.Context(), func(ctx context.Context, s *chunkstore.Store) error {
				if err := s.RemoveKey(ctx, args[0]); err != nil {
					return err
				}
				if a.json {
					return a.printJSON(keyRemovedJSON{Removed: args[0]})
				}
				a.info("removed key %s", args[0])
				return nil
			})
		},
	}
	passwd := &cobra.Command{
		Use:   "passwd",
		Short: "Change the password used: add the new one, then remove the old one",
		Args:  exactArgs(0, "no arguments"),
		RunE:  func(cmd *cobra.Command, args []string) error { return addKey(cmd, true) },
	}
	newSecretFlags(passwd)
	cmd.AddCommand(list, add, remove, passwd)
	return cmd
}

// withStore opens the repository's chunk store, which must be encrypted,
// runs fn on it, and closes it.
func (a *app) withStore(ctx context.Context, fn func(context.Context, *chunkstore.Store) error) error {
	s, err := a.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	if s.Cipher() == nil {
		return errors.New("the repository is not encrypted: it has no keys (it was created with --no-encryption)")
	}
	return fn(ctx, s)
}

type keyJSON struct {
	ID      string `json:"id"`
	Created string `json:"created"`
	Host    string `json:"host"`
	KDF     string `json:"kdf"` // argon2id (a password) or keyfile
	Current bool   `json:"current,omitempty"`
	Removed string `json:"removed,omitempty"` // passwd: the key it replaced
}

func newKeyJSON(k chunkstore.KeySlot) keyJSON {
	return keyJSON{ID: k.ID, Created: k.Created.Format(time.RFC3339), Host: k.Host, KDF: k.KDF}
}

type keyRemovedJSON struct {
	Removed string `json:"removed"`
}
