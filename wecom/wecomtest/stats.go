package wecomtest

import (
	"context"
	"maps"
)

// Stats is a snapshot of what the fake has seen, keyed by API name (the API*
// constants; an unknown path is counted under its own path). The maps are
// copies the caller may keep and modify.
//
// Like httptest.ResponseRecorder.Result, fields may be added in later
// versions, so compare the fields you care about rather than the whole
// struct with reflect.DeepEqual.
type Stats struct {
	// Calls counts every request that reached the fake, including faulted
	// and rejected ones.
	Calls map[string]int
	// Errcodes counts the errcode of every JSON answer (0 for success).
	Errcodes map[string]map[int]int
	// Statuses counts the HTTP status of every answer (200 for every JSON
	// answer, 503 for injected 5xx, 404/405 for misrouted calls).
	Statuses map[string]map[int]int
	// Dropped counts connections the fake closed without an answer.
	Dropped map[string]int
	// Abandoned counts calls whose client gave up (e.g. timed out) during
	// Faults.Latency, before any answer.
	Abandoned map[string]int
}

func newStats() Stats {
	return Stats{
		Calls:     map[string]int{},
		Errcodes:  map[string]map[int]int{},
		Statuses:  map[string]map[int]int{},
		Dropped:   map[string]int{},
		Abandoned: map[string]int{},
	}
}

func (st Stats) clone() Stats {
	c := Stats{Calls: maps.Clone(st.Calls), Dropped: maps.Clone(st.Dropped), Abandoned: maps.Clone(st.Abandoned),
		Errcodes: map[string]map[int]int{}, Statuses: map[string]map[int]int{}}
	for k, v := range st.Errcodes {
		c.Errcodes[k] = maps.Clone(v)
	}
	for k, v := range st.Statuses {
		c.Statuses[k] = maps.Clone(v)
	}
	return c
}

func inc2(m map[string]map[int]int, api string, k int) {
	if m[api] == nil {
		m[api] = map[int]int{}
	}
	m[api][k]++
}

// record applies f to the stats and wakes every Wait.
func (s *Server) record(f func(*Stats)) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	f(&s.stats)
	close(s.changed)
	s.changed = make(chan struct{})
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats.clone()
}

// Calls returns how many calls api has received, faulted ones included.
func (s *Server) Calls(api string) int {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats.Calls[api]
}

// CallCounts returns a copy of the per-API call counts (Stats().Calls).
func (s *Server) CallCounts() map[string]int {
	return s.Stats().Calls
}

// Errcodes returns a copy of the errcode counts of api's JSON answers.
func (s *Server) Errcodes(api string) map[int]int {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return maps.Clone(s.stats.Errcodes[api])
}

// Wait blocks until cond holds for the current stats or ctx ends, and
// returns ctx's error in that case. cond is called with a fresh snapshot
// after every change; it must not call the Server. Use it instead of
// sleeping, e.g. to wait until a background worker made its batch call:
//
//	err := srv.Wait(ctx, func(st wecomtest.Stats) bool {
//		return st.Errcodes[wecomtest.APIExternalUserIDToPendingID][0] >= 1
//	})
func (s *Server) Wait(ctx context.Context, cond func(Stats) bool) error {
	for {
		s.statsMu.Lock()
		snap := s.stats.clone()
		ch := s.changed
		s.statsMu.Unlock()
		if cond(snap) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
