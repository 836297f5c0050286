package main

import (
	"fmt"
	"io/fs"
	"time"

	"github.com/dedupstore/dedupstore/gc"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/dedupstore/dedupstore/tree"
	"github.com/spf13/cobra"
)

func (a *app) showCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show DIR/NAME",
		Short: "Show a backup's entries, with metadata, chunks and what each cost",
		Long: `Show the entries of a backup in catalog order: mode, owner, modification
time and size, and for files the chunk count, the stored size of their
distinct chunks, and the part of that no other backup uses (NEW): what the
file cost the repository beyond what was already there.`,
		Args: exactArgs(1, "one DIR/NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			return a.withBackup(ctx, args[0], func(s *dedup.Storage, bh storage.BackupHandle, entries []tree.Entry) error {
				dir, name := bh.Directory(), bh.Name()
				files, err := s.Files(ctx, dir, name)
				if err != nil {
					return err
				}
				stored := map[string]gc.FileStats{}
				for _, f := range files {
					stored[f.Name] = f
				}
				out := showJSON{Backup: dir + "/" + name, Entries: []showEntryJSON{}}
				var rows [][]string
				for _, e := range entries {
					j := showEntryJSON{Path: string(e.Path), Type: string(e.Type), Mode: e.Mode, UID: e.UID, GID: e.GID, MTime: e.MTime, Size: e.Size, Target: string(e.Target), HardLink: string(e.HardLink)}
					chunks := ""
					if f, ok := stored[e.Stored]; ok && e.HardLink == "" {
						j.Chunks, j.StoredBytes, j.NewBytes = f.Chunks, f.StoredBytes, f.ExclusiveBytes
						chunks = fmt.Sprint(f.Chunks)
					}
					out.Entries = append(out.Entries, j)
					path := string(e.Path)
					switch {
					case e.Target != "":
						path += " -> " + string(e.Target)
					case e.HardLink != "":
						path += " => " + string(e.HardLink)
					}
					rows = append(rows, []string{modeString(e), fmt.Sprintf("%d:%d", e.UID, e.GID), mtime(e.MTime), size(e.Size), chunks, size(j.StoredBytes), size(j.NewBytes), printable(path)})
				}
				if a.json {
					return a.printJSON(out)
				}
				a.table("MODE\tOWNER\tMODIFIED\tSIZE\tCHUNKS\tSTORED\tNEW\tPATH", rows)
				return nil
			})
		},
	}
}

// modeString renders e's type and mode as ls -l does.
func modeString(e tree.Entry) string {
	m := e.FileMode()
	switch e.Type {
	case tree.Dir:
		m |= fs.ModeDir
	case tree.Symlink:
		m |= fs.ModeSymlink
	case tree.FIFO:
		m |= fs.ModeNamedPipe
	case tree.Char:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case tree.Block:
		m |= fs.ModeDevice
	}
	return m.String()
}

func mtime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04")
}

type showJSON struct {
	Backup  string          `json:"backup"`
	Entries []showEntryJSON `json:"entries"`
}

type showEntryJSON struct {
	Path        string    `json:"path"`
	Type        string    `json:"type"`
	Mode        uint32    `json:"mode"`
	UID         uint32    `json:"uid"`
	GID         uint32    `json:"gid"`
	MTime       time.Time `json:"mtime"`
	Size        int64     `json:"size"`
	Target      string    `json:"target,omitempty"`
	HardLink    string    `json:"hardlink,omitempty"`
	Chunks      int64     `json:"chunks"`
	StoredBytes int64     `json:"stored_bytes"`
	NewBytes    int64     `json:"new_bytes"`
}
