package main

import (
	"fmt"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/storage/dedup"

	"github.com/spf13/cobra"
)

func (a *app) statsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Show what the repository holds and what deduplication saves",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStorage(func(s *dedup.Storage) error {
				st, err := s.Stats(cmd.Context())
				if err != nil {
					return err
				}
				out := statsJSON{Encryption: st.Encryption, Backups: st.Backups, LogicalBytes: st.LogicalBytes, UniqueBytes: st.UniqueBytes, StoredBytes: st.StoredBytes,
					DeadBytes: st.DeadBytes, DuplicateChunks: st.DuplicateChunks, DuplicateBytes: st.DuplicateBytes,
					DeltaChunks: st.DeltaChunks, DeltaPlainBytes: st.DeltaPlainBytes, DeltaStoredBytes: st.DeltaStoredBytes, DeltaSavedBytes: st.DeltaSavedBytes, Chunks: st.Chunks, Packs: st.Packs, PartialWrites: st.Partials, PartialBytes: st.PartialBytes, DedupRatio: st.DedupRatio, CompressionRatio: st.CompressionRatio}
				if st.StoredBytes > 0 {
					out.TotalRatio = float64(st.LogicalBytes) / float64(st.StoredBytes)
				}
				if a.json {
					return a.printJSON(out)
				}
				encryption := out.Encryption
				if encryption == chunkstore.EncryptionNone {
					encryption = "none\tUNENCRYPTED: anyone who can read the repository reads its backups"
				}
				a.table("", [][]string{
					{"encryption", encryption},
					{"backups", fmt.Sprint(out.Backups)},
					{"logical", size(out.LogicalBytes) + "\tthe backups' files added up"},
					{"unique", size(out.UniqueBytes) + "\tdistinct chunks, before compression"},
					{"stored", size(out.StoredBytes) + "\tpack files on disk"},
					{"dead", size(out.DeadBytes) + "\tno backup uses it: dedupctl gc reclaims it"},
					{"  stored twice", fmt.Sprintf("%s in %d chunks\tsecond copies, as agents storing the same new data at once leave", size(out.DuplicateBytes), out.DuplicateChunks)},
					{"deltas", fmt.Sprintf("%d chunks, %s stored for %s\tsimilar chunks stored against others: about %s saved", out.DeltaChunks, size(out.DeltaStoredBytes), size(out.DeltaPlainBytes), size(out.DeltaSavedBytes))},
					{"partial writes", fmt.Sprintf("%s in %d\tleft by processes that died: dedupctl gc removes them after a day", size(out.PartialBytes), out.PartialWrites)},
					{"chunks / packs", fmt.Sprintf("%d / %d", out.Chunks, out.Packs)},
					{"dedup ratio", fmt.Sprintf("%.2f\tlogical ÷ unique", out.DedupRatio)},
					{"compression ratio", fmt.Sprintf("%.2f\tunique ÷ stored in use", out.CompressionRatio)},
					{"total ratio", fmt.Sprintf("%.2f\tlogical ÷ stored", out.TotalRatio)},
				})
				return nil
			})
		},
	}
}

type statsJSON struct {
	Encryption       string  `json:"encryption"` // none or aes-256-gcm
	Backups          int     `json:"backups"`
	LogicalBytes     int64   `json:"logical_bytes"`
	UniqueBytes      int64   `json:"unique_bytes"`
	StoredBytes      int64   `json:"stored_bytes"`
	DeadBytes        int64   `json:"dead_bytes"`
	DuplicateChunks  int     `json:"duplicate_chunks"`
	DuplicateBytes   int64   `json:"duplicate_bytes"`
	DeltaChunks      int     `json:"delta_chunks"`
	DeltaPlainBytes  int64   `json:"delta_plain_bytes"`
	DeltaStoredBytes int64   `json:"delta_stored_bytes"`
	DeltaSavedBytes  int64   `json:"delta_saved_bytes"`
	Chunks           int     `json:"chunks"`
	Packs            int     `json:"packs"`
	PartialWrites    int     `json:"partial_writes"`
	PartialBytes     int64   `json:"partial_bytes"`
	DedupRatio       float64 `json:"dedup_ratio"`
	CompressionRatio float64 `json:"compression_ratio"`
	TotalRatio       float64 `json:"total_ratio"`
}
