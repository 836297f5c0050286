package main

import (
	"context"

	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/dedupstore/dedupstore/tree"
	"github.com/spf13/cobra"
)

func (a *app) diffCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "diff DIR/A DIR/B",
		Short: "Show what changed between two backups",
		Long: `Show the paths added (+), removed (-) and changed between backup A and backup
B: content (M, compared by chunks, without reading data), type (T), or only
metadata such as mode, owner, times or link target (U), with sizes.`,
		Args: exactArgs(2, "two backups, DIR/A and DIR/B"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStorage(func(s *dedup.Storage) error { return a.runDiff(cmd.Context(), s, args[0], args[1]) })
		},
	}
}

type diffEntryJSON struct {
	Change  string `json:"change"` // added, removed, content, type, metadata
	Path    string `json:"path"`
	Type    string `json:"type"`
	OldSize int64  `json:"old_size"`
	NewSize int64  `json:"new_size"`
}

type diffJSON struct {
	From    string          `json:"from"`
	To      string          `json:"to"`
	Changes []diffEntryJSON `json:"changes"`
	Added   int             `json:"added"`
	Removed int             `json:"removed"`
	Changed int             `json:"changed"`
	// SizeDelta is the logical size of B's files less A's.
	SizeDelta int64 `json:"size_delta"`
}

func (a *app) runDiff(ctx context.Context, s *dedup.Storage, argA, argB string) error {
	type side struct {
		ref     dedup.FileRef
		entries map[tree.Name]tree.Entry
		order   []tree.Entry
	}
	load := func(arg string) (side, error) {
		dir, name, err := splitBackup(arg)
		if err != nil {
			return side{}, err
		}
		bh, err := findBackup(ctx, s, dir, name)
		if err != nil {
			return side{}, err
		}
		entries, err := readCatalog(ctx, s, bh)
		if err != nil {
			return side{}, err
		}
		sd := side{ref: dedup.FileRef{Dir: dir, Name: name}, entries: map[tree.Name]tree.Entry{}, order: entries}
		for _, e := range entries {
			sd.entries[e.Path] = e
		}
		return sd, nil
	}
	from, err := load(argA)
	if err != nil {
		return err
	}
	to, err := load(argB)
	if err != nil {
		return err
	}
	out := diffJSON{From: argA, To: argB, Changes: []diffEntryJSON{}}
	for _, e := range from.order {
		if _, ok := to.entries[e.Path]; !ok {
			out.Changes = append(out.Changes, diffEntryJSON{Change: "removed", Path: string(e.Path), Type: string(e.Type), OldSize: e.Size})
			out.Removed++
			out.SizeDelta -= e.Size
		}
	}
	for _, e := range to.order {
		old, ok := from.entries[e.Path]
		change := ""
		switch {
		case !ok:
			change = "added"
			out.Added++
		case old.Type != e.Type:
			change = "type"
		case e.Type == tree.File:
			oldRef, newRef := from.ref, to.ref
			oldRef.File, newRef.File = old.Stored, e.Stored
			same, err := s.SameContent(ctx, oldRef, newRef)
			if err != nil {
				return err
			}
			if !same {
				change = "content"
			}
		}
		if change == "" && ok && !sameMetadata(old, e) {
			change = "metadata"
		}
		if change == "" {
			continue
		}
		if change != "added" {
			out.Changed++
		}
		out.SizeDelta += e.Size - old.Size
		out.Changes = append(out.Changes, diffEntryJSON{Change: change, Path: string(e.Path), Type: string(e.Type), OldSize: old.Size, NewSize: e.Size})
	}
	if a.json {
		return a.printJSON(out)
	}
	marks := map[string]string{"added": "+", "removed": "-", "content": "M", "type": "T", "metadata": "U"}
	var rows [][]string
	for _, c := range out.Changes {
		sizes := size(c.NewSize)
		switch c.Change {
		case "removed":
			sizes = size(c.OldSize)
		case "content", "type":
			sizes = size(c.OldSize) + " -> " + size(c.NewSize)
		}
		rows = append(rows, []string{marks[c.Change], sizes, printable(c.Path)})
	}
	a.table("", rows)
	a.info("%d added, %d removed, %d changed; files %s by %s", out.Added, out.Removed, out.Changed, map[bool]string{true: "grew", false: "shrank"}[out.SizeDelta >= 0], size(abs(out.SizeDelta)))
	return nil
}

// sameMetadata compares what a restore sets beside content.
func sameMetadata(a, b tree.Entry) bool {
	return a.Mode == b.Mode && a.UID == b.UID && a.GID == b.GID && a.MTime.Equal(b.MTime) && a.Target == b.Target && a.Rdev == b.Rdev && a.HardLink == b.HardLink
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}
