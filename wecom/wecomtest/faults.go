package wecomtest

import (
	"math/rand/v2"
	"slices"
	"time"
)

// Faults describes how badly the fake behaves. The zero value is a healthy
// WeCom. Set it with WithFaults or Server.SetFaults, at any time.
//
// Every faulted call is still counted (Stats.Calls), and a faulted call has
// no other effect: it neither issues ids nor consumes quota.
type Faults struct {
	// Latency delays every answer (faulted or not) by this much real time.
	// The delay ends early when the client gives up (request context) or
	// when the server closes; a call cut short by Close is dropped.
	Latency time.Duration

	// ErrorRate is the probability (0..1) that a call is answered
	// {"errcode":-1,"errmsg":"system busy"} with HTTP 200.
	ErrorRate float64

	// Status5xxRate is the probability (0..1) that a call is answered
	// HTTP 503 with a plain-text body, as a failing gateway would.
	Status5xxRate float64

	// DropRate is the probability (0..1) that the connection is closed
	// without an answer. Go's transport silently retries a dropped GET on
	// a reused connection once, so a dropped gettoken may be counted twice.
	DropRate float64

	// TokenLifetime, when positive and shorter than 7200 s, makes tokens
	// issued from now on expire after this long on the fake clock although
	// expires_in still says 7200: WeCom may revoke a token early (§4.1), and
	// a client must then refresh on 42001.
	TokenLifetime time.Duration

	// UntrustedIP says the caller's egress IP is not on the app's trusted
	// IPs (企业可信IP): every API but gettoken answers 60020 with WeCom's
	// errmsg, which names the caller's IP ("… from ip: 127.0.0.1, …").
	// FailNext scripts still come first.
	UntrustedIP bool

	// APIs restricts ErrorRate, Status5xxRate and DropRate to these APIs
	// (the API* constants). Empty means every API. Latency applies to all.
	APIs []string

	// Seed seeds the generator behind the rates, so a sequence of calls
	// from one goroutine meets the same faults on every run. Setting the
	// faults restarts the sequence.
	Seed int64
}

// Fault is one scripted answer, queued with Server.FailNext. Exactly one of
// its fields should be set; Drop wins over Status, and Status over Errcode.
type Fault struct {
	// Errcode, when non-zero, is answered as {"errcode":Errcode,...} with HTTP 200.
	Errcode int
	// Msg, with Errcode, replaces the errmsg the fake would send. Without
	// it a 60020 names the caller's IP, as WeCom's does.
	Msg string
	// Status, when non-zero, is answered as that HTTP status with a plain-text body.
	Status int
	// Drop closes the connection without an answer.
	Drop bool
}

// SetFaults replaces the random faults. It is safe to call at any time,
// also while calls are in flight; calls already past their fault decision
// are not affected.
func (s *Server) SetFaults(f Faults) {
	f.APIs = slices.Clone(f.APIs)
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.faults = f
	s.rng = rand.New(rand.NewPCG(uint64(f.Seed), 0x77656374)) // faults need repeatability, not secrecy
}

// Faults returns the current random faults.
func (s *Server) Faults() Faults {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	f := s.faults
	f.APIs = slices.Clone(f.APIs)
	return f
}

// FailNext queues scripted faults for api: its next len(faults) calls are
// answered with them, in order, before any random fault is considered. It
// is the deterministic way to say "the next batch call gets 84061".
func (s *Server) FailNext(api string, faults ...Fault) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.script[api] = append(s.script[api], faults...)
}

// decision is what the fault layer does with one call.
type decision struct {
	latency time.Duration
	fault   Fault // zero: answer normally
}

// decide consumes a scripted fault or rolls the random ones for one call.
func (s *Server) decide(api string) decision {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	d := decision{latency: s.faults.Latency}
	if q := s.script[api]; len(q) > 0 {
		d.fault = q[0]
		if len(q) == 1 {
			delete(s.script, api)
		} else {
			s.script[api] = q[1:]
		}
		return d
	}
	f := s.faults
	if f.UntrustedIP && api != APIGetToken {
		d.fault.Errcode = codeIPNotAllowed
		return d
	}
	if len(f.APIs) > 0 && !slices.Contains(f.APIs, api) {
		return d
	}
	// One draw per rate, always in this order, so that a seed gives the same
	// sequence whatever the rates are.
	drop, busy5xx, errc := s.rng.Float64(), s.rng.Float64(), s.rng.Float64()
	switch {
	case drop < f.DropRate:
		d.fault.Drop = true
	case busy5xx < f.Status5xxRate:
		d.fault.Status = 503
	case errc < f.ErrorRate:
		d.fault.Errcode = codeSystemBusy
	}
	return d
}

// tokenLifetime is the real lifetime of a token issued now.
func (s *Server) tokenLifetime() time.Duration {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if l := s.faults.TokenLifetime; l > 0 && l < tokenExpiresIn {
		return l
	}
	return tokenExpiresIn
}
