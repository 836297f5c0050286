package protocol

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/index"
)

// Condemnation is a phase-1 decision: packs to delete once no agent can
// depend on them.
type Condemnation struct {
	Name  string          `json:"-"` // object name
	Time  time.Time       `json:"-"` // when the object was last written, by the server's clock
	Packs []chunkstore.ID `json:"packs"`
	// Leases alive when the condemnation was written; nil until recorded.
	Leases []string `json:"leases"`
	// Swept says phase 2 carried the condemnation out: Packs are deleted.
	Swept bool `json:"swept,omitempty"`
}

// Condemnations reads every condemnation in the repository.
func Condemnations(ctx context.Context, b chunkstore.Backend) ([]Condemnation, error) {
	var out []Condemnation
	err := b.List(ctx, CondemnedPrefix, "", func(o chunkstore.ObjectInfo) error {
		out = append(out, Condemnation{Name: o.Name, Time: o.ModTime})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("protocol: list condemnations: %w", err)
	}
	read := out[:0]
	for _, c := range out {
		data, err := chunkstore.ReadObject(ctx, b, c.Name, 0)
		if errors.Is(err, chunkstore.ErrNotExist) {
			continue // swept since it was listed
		}
		if err != nil {
			return nil, fmt.Errorf("protocol: read condemnation: %w", err)
		}
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, fmt.Errorf("protocol: read condemnation %s: %w: %w", c.Name, chunkstore.ErrCorrupt, err)
		}
		read = append(read, c)
	}
	return read, nil
}

func PutCondemnation(ctx context.Context, b chunkstore.Backend, c Condemnation) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := b.Put(ctx, c.Name, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("protocol: write condemnation: %w", err)
	}
	return nil
}

// RecordDeleted records packs about to be deleted outside a collection (a
// repair moving damaged packs aside) as a swept condemnation, so that every
// process's sync forgets them as it forgets what a sweep deleted.
// IMPORTANT: call it before deleting them.
func RecordDeleted(ctx context.Context, b chunkstore.Backend, packs []chunkstore.ID) error {
	var r [12]byte
	if _, err := rand.Read(r[:]); err != nil {
		return err
	}
	return PutCondemnation(ctx, b, Condemnation{Name: CondemnedPrefix + hex.EncodeToString(r[:]), Packs: packs, Leases: []string{}, Swept: true})
}

// SyncCondemned sets the index's condemned packs to those of the
// repository's condemnations and forgets the packs of swept ones. With
// add, as a sync that did not list every pack must, the packs it holds
// condemned stay so (see index.DB.SetCondemned).
func SyncCondemned(ctx context.Context, b chunkstore.Backend, idx *index.DB, add bool) error {
	cs, err := Condemnations(ctx, b)
	if err != nil {
		return err
	}
	var packs, swept []chunkstore.ID
	for _, c := range cs {
		if !c.Swept {
			packs = append(packs, c.Packs...)
			continue
		}
		for _, id := range c.Packs { // forgotten at an earlier sync, mostly
			if _, known, err := idx.Pack(id); err != nil {
				return err
			} else if known {
				swept = append(swept, id)
			}
		}
	}
	if err := idx.DropPacks(swept); err != nil {
		return err
	}
	return idx.SetCondemned(packs, add)
}
