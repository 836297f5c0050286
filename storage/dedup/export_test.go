package dedup

import "github.com/dedupstore/dedupstore/index"

// IndexOf exposes an open storage's index to the tests.
func IndexOf(s *Storage) *index.DB {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.repo.idx
}
