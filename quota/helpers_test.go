package quota_test

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/pendinglink/pendinglink/internal/fakeclock"
	"github.com/pendinglink/pendinglink/quota"
)

// newFakeClock returns the tests' clock, starting at 2025-03-01 10:00 UTC.
func newFakeClock() *fakeclock.Clock {
	return fakeclock.New(time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC))
}

func isQuotaError(err error) bool {
	var qe *quota.Error
	return errors.As(err, &qe)
}

// memStore is an in-memory quota.Store.
type memStore struct {
	mu      sync.Mutex
	m       map[string]map[int64]int64
	addErr  error
	sinceAt []int64
}

func newMemStore() *memStore { return &memStore{m: map[string]map[int64]int64{}} }

func (s *memStore) AddQuota(_ context.Context, key string, bucket, n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.addErr != nil {
		return s.addErr
	}
	if s.m[key] == nil {
		s.m[key] = map[int64]int64{}
	}
	s.m[key][bucket] += n
	return nil
}

func (s *memStore) LoadQuota(_ context.Context, key string, since int64) (map[int64]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sinceAt = append(s.sinceAt, since)
	out := map[int64]int64{}
	for b, n := range s.m[key] {
		if b >= since {
			out[b] = n
		}
	}
	return out, nil
}

var _ quota.Store = (*memStore)(nil)
