package handlers

import (
	"fmt"
	"slices"
	"sync"
)

// Receive-id check modes (WECOM_RECEIVE_ID_CHECK). Which receive id WeCom puts
// in downstream-corp events is unconfirmed (protocol reference §9 #1), so the
// default accepts the upstream corp and the configured dealers.
const (
	ReceiveIDAllowlist = "allowlist"
	ReceiveIDStrict    = "strict"
	ReceiveIDOff       = "off"
)

// ReceiveIDPolicy decides whether a decrypted receive id is acceptable. It is
// safe for concurrent use; Allow may be widened at run time (for example from
// list_app_share_info) without a restart.
type ReceiveIDPolicy struct {
	mode     string
	upstream string
	mu       sync.RWMutex
	allowed  map[string]struct{}
}

// NewReceiveIDPolicy builds a policy. upstream is the brand's corp id;
// downstream lists dealer corp ids accepted in allowlist mode.
func NewReceiveIDPolicy(mode, upstream string, downstream []string) (*ReceiveIDPolicy, error) {
	if !slices.Contains([]string{ReceiveIDAllowlist, ReceiveIDStrict, ReceiveIDOff}, mode) {
		return nil, fmt.Errorf("receive id check %q: must be allowlist, strict or off", mode)
	}
	if upstream == "" && mode != ReceiveIDOff {
		return nil, fmt.Errorf("receive id check %q needs the upstream corp id", mode)
	}
	p := &ReceiveIDPolicy{mode: mode, upstream: upstream, allowed: map[string]struct{}{}}
	p.Allow(downstream...)
	return p, nil
}

// Mode returns the configured mode.
func (p *ReceiveIDPolicy) Mode() string { return p.mode }

// Allow adds downstream corp ids to the allow-list.
func (p *ReceiveIDPolicy) Allow(ids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		if id != "" {
			p.allowed[id] = struct{}{}
		}
	}
}

// Accepts reports whether a callback carrying receiveID is accepted.
func (p *ReceiveIDPolicy) Accepts(receiveID []byte) bool {
	switch p.mode {
	case ReceiveIDOff:
		return true
	case ReceiveIDStrict:
		return string(receiveID) == p.upstream
	}
	if string(receiveID) == p.upstream {
		return true
	}
	p.mu.RLock()
	_, ok := p.allowed[string(receiveID)]
	p.mu.RUnlock()
	return ok
}
