package protocol_test

import (
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/protocol"
)

// When a sync may list only the packs named since the last one, and from
// where; and when a missing removal record is damage.
func TestSyncRules(t *testing.T) {
	const ttl = 10 * time.Minute
	now := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	since := chunkstore.PacksAfter(now.Add(-5*time.Minute - protocol.SyncWindow))
	for _, c := range []struct {
		what   string
		last   time.Time
		synced bool
		full   bool
		want   string
	}{
		{"never synced", time.Time{}, false, false, ""},
		{"full asked for", now.Add(-5 * time.Minute), true, true, ""},
		{"5 minutes ago", now.Add(-5 * time.Minute), true, false, since},
		{"just under the gap", now.Add(-protocol.MaxSyncGap(ttl) + time.Second), true, false, chunkstore.PacksAfter(now.Add(-protocol.MaxSyncGap(ttl) + time.Second - protocol.SyncWindow))},
		{"the gap", now.Add(-protocol.MaxSyncGap(ttl)), true, false, ""},
		{"in the future (a clock set back)", now.Add(time.Minute), true, false, ""},
	} {
		if got := protocol.PacksAfter(c.last, c.synced, now, ttl, c.full); got != c.want {
			t.Errorf("%s: PacksAfter = %q, want %q", c.what, got, c.want)
		}
	}
	if protocol.MaxSyncGap(ttl) >= protocol.CondemnedKeep(ttl) {
		t.Errorf("MaxSyncGap %v is not shorter than CondemnedKeep %v: a sync could miss a sweep", protocol.MaxSyncGap(ttl), protocol.CondemnedKeep(ttl))
	}
	for _, c := range []struct {
		last   time.Time
		synced bool
		want   bool
	}{
		{time.Time{}, false, false},
		{now.Add(-time.Hour), true, true},
		{now.Add(-protocol.RemovedKeep / 2), true, false},
	} {
		if got := protocol.TrustRecords(c.last, c.synced, now); got != c.want {
			t.Errorf("TrustRecords(last %v, synced %v) = %v", now.Sub(c.last), c.synced, got)
		}
	}
}
