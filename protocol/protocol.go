// Package protocol is how many processes, on one host or many, share one
// repository, each with an index of its own that is a cache of the
// repository's objects: the objects they publish for each other, the rules
// of time they follow, and why following them never loses a byte. Package
// gc carries collections out by it; storage/dedup syncs its index and runs
// backups by it.
//
// A process's writers may deduplicate against any chunk its index holds,
// and a collection in another process cannot see what they hold, so
// nothing is deleted before every process could have heard of it. The
// objects and rules:
//
//   - Leases. Every process holds a lease object, leases/<random>, while it
//     has a backup running, and rewrites it every LeaseTTL/4. Just after
//     writing a new lease it syncs its index, condemned packs included. It
//     never deduplicates against a chunk of a condemned pack. It refuses to
//     write a manifest once its lease was last rewritten LeaseTTL/2 ago or
//     more, and once a rewrite comes that late the lease is lost for good
//     (see Heartbeat).
//   - Backups in progress. StartBackup creates running/<dir>/<name>
//     (index.RunningName) only if absent, naming its lease; the backup's end
//     or abort deletes it. A marker whose lease is gone is a dead process's.
//   - The lock. A collection holds the exclusive lock object
//     locks/<random>, written, then checked against every other lock
//     younger than LeaseTTL (see Lock).
//   - Phase 1 (condemn): a collection marks, copies the live chunks of the
//     packs it would rewrite into new packs, then writes a condemnation,
//     condemned/<random>, listing the packs to delete; then it lists the
//     leases and records in it those alive.
//   - Phase 2 (sweep): a condemnation is carried out once none of the
//     leases it records is alive (rewritten within LeaseTTL, by the
//     server's clock) and, if it records any, once it is older than the
//     grace period; one that recorded none is carried out by the collection
//     that wrote it. Which are due is settled first; then the collection
//     syncs its index fully, marks again, deletes the condemned packs that
//     hold no live chunk, and spares the rest. It rewrites the condemnation
//     as swept, listing only the packs it deleted, and a later collection
//     deletes it once it is CondemnedKeep old: until then it tells every
//     sync which packs are gone. A repair that deletes a damaged pack
//     records it the same way (RecordDeleted).
//   - Sync. A process's sync lists every condemnation (swept or not),
//     every manifest and every marker, and the packs named since its last
//     sync began, less SyncWindow (pack names begin with their writer's
//     time: chunkstore.PacksAfter), if that sync began less than
//     MaxSyncGap ago; otherwise, and for a collection, a check, a repair or
//     a read that missed, every pack (a full sync). A sync that did not
//     list every pack keeps the packs it knew condemned as condemned.
//   - Removals. RemoveBackup writes removed/<dir>/<name>@<start>
//     (index.RemovedName) before it deletes the manifest; a sync forgets a
//     backup whose manifest is gone only with that record, and otherwise
//     records damage. Collections delete records after RemovedKeep.
//
// Why it is safe. A writer can deduplicate against a chunk of a condemned
// pack P only if its index did not know P was condemned, that is, if it
// synced before the condemnation was written, under a lease written before
// that too. Such a lease was listed after the condemnation was written, so
// it is recorded; phase 2 waits until it is gone or expired. A writer
// deletes its lease only after its manifests are stored, and stops
// writing manifests before its lease can expire, so by phase 2 every
// manifest that could refer to P is stored and the second mark sees it. A
// condemnation that recorded no lease was written when no process had a
// backup running; a process that starts one afterwards syncs after writing
// its lease, and so sees the condemnation before it could use P. Pack
// names end with random bytes, so a pack can never be deleted under a
// writer that stored the same bytes again. A sync that lists only new
// packs learns of every deleted pack from its condemnation: one written
// after the previous sync began is still listed, since MaxSyncGap is
// shorter than CondemnedKeep, and one written before was listed then.
//
// Clocks. Every age a collection judges (of leases, locks, condemnations,
// markers, records and packs) is the server's: object times, compared with
// the server's time of the collection's own lock. A process's own clock
// only times its lease rewrites and the gaps between its syncs, as
// durations, and names its packs: a writer whose clock runs more than
// SyncWindow behind names packs that incremental syncs miss, which costs
// duplicate chunks until a full sync, never a wrong read or a deletion.
package protocol

import (
	"errors"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
)

// Object name prefixes of the protocol; index.RunningPrefix and
// index.RemovedPrefix are its too.
const (
	LeasePrefix     = "leases/"
	LockPrefix      = "locks/"
	CondemnedPrefix = "condemned/"
)

// SyncWindow is how far before the start of its last sync an incremental
// sync lists packs again: a pack is found if its writer's clock is at most
// this much behind the syncing process's, and its upload took at most this
// long.
const SyncWindow = time.Hour

// PacksAfter is where a sync that begins at now lists packs from, after
// one that began at last (synced false: none did): "" for a full sync of
// every pack, asked for with full or due because the last is too long ago
// or in the future; otherwise the name after which the packs named since
// last, less SyncWindow, sort.
func PacksAfter(last time.Time, synced bool, now time.Time, ttl time.Duration, full bool) string {
	if full || !synced || now.Sub(last) >= MaxSyncGap(ttl) || now.Before(last) {
		return ""
	}
	return chunkstore.PacksAfter(last.Add(-SyncWindow))
}

// TrustRecords says whether a sync that begins at now, after one that
// began at last, may take a missing removal record as damage: the record
// it would need cannot have expired since (see RemovedKeep).
func TrustRecords(last time.Time, synced bool, now time.Time) bool {
	return synced && now.Sub(last) < RemovedKeep/2
}

// DefaultLeaseTTL is how long a lease or lock lives without being rewritten.
const DefaultLeaseTTL = 10 * time.Minute

// RemovedKeep is how long the record of a removed backup
// (index.RemovedName) is kept, by the server's clock. A process whose
// index was last synced more than half of it ago forgets backups whose
// manifests are gone without asking for the record.
const RemovedKeep = 30 * 24 * time.Hour

// CondemnedKeep is how long a swept condemnation stays listed, by the
// server's clock, for a repository whose leases live ttl.
func CondemnedKeep(ttl time.Duration) time.Duration { return 6 * ttl }

// MaxSyncGap is the longest time, by an agent's own clock, from the start
// of one sync of its index to the start of the next for the next to list
// only the packs written since: CondemnedKeep less a margin for clocks
// that run at different rates.
func MaxSyncGap(ttl time.Duration) time.Duration { return 4 * ttl }

var (
	// ErrLocked is returned when another agent's collection holds the lock.
	ErrLocked = errors.New("protocol: another collection is running on the repository")
	// ErrLeaseLost is returned by Heartbeat.Valid once the heartbeat could
	// not be rewritten in time: the agent must not rely on it any more.
	ErrLeaseLost = errors.New("protocol: lease lost: it was not renewed in time")
)
