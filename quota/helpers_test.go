package quota_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pendinglink/pendinglink/quota"
)

// fakeClock is a settable clock, starting at 2025-03-01 10:00 UTC.
type fakeClock struct{ nanos atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.nanos.Store(time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.nanos.Load()).UTC() }
func (c *fakeClock) Advance(d time.Duration) { c.nanos.Add(int64(d)) }

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
