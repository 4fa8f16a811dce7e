package wecom

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Configuration faults: answers that say the deployment is set up wrong, not
// that a request is. Retrying at once cannot help and giving up loses work,
// so the client blocks the API (per corp where the fault is a dealer's),
// makes no call while it is blocked, and lets one probe through at a
// growing interval; the first answer that is not a configuration fault
// unblocks it.
var configFixes = map[int]string{
	CodeIPNotAllowed:    "add the egress IP named in errmsg to the app's 企业可信IP (应用管理 → the app → 企业可信IP)",
	CodeNoPermission:    "list the app under 客户联系 → API → 可调用接口的应用, and have each dealer's admin grant it 「企业客户」",
	CodeNoAppPermission: "the token or agentid belongs to another app: check WECOM_AGENT_ID and the dealers' agentids (list_app_share_info)",
	CodeAppNotShared:    "the dealer no longer shares the app: share it again under 上下游 → 共享应用",
	CodeInvalidSecret:   "check WECOM_CORP_SECRET: it must be the shared app's secret",
	40013:               "check WECOM_CORP_ID",
	40091:               "check WECOM_CORP_SECRET: it must be the shared app's secret",
}

// Probe intervals of a blocked API: the first after MinProbeInterval,
// doubling up to MaxProbeInterval.
const (
	MinProbeInterval = time.Minute
	MaxProbeInterval = 30 * time.Minute
)

// IsConfigFault reports whether err is a WeCom answer that says the
// deployment is set up wrong (60020, 48002, 301002, 670001, 40001, 40013,
// 40091), whether it came back from a call or from a block (*BlockedError).
func IsConfigFault(err error) bool {
	code, ok := apiCode(err)
	_, fault := configFixes[code]
	return ok && fault
}

// ConfigFix says where to fix a configuration fault's errcode, "" for
// other codes.
func ConfigFix(code int) string { return configFixes[code] }

// BlockedError is returned, without a call made, while an API is blocked
// by a configuration fault; it wraps the *APIError that blocked it.
// RetryAt is when the next probe may go.
type BlockedError struct {
	API, CorpID string
	RetryAt     time.Time
	Err         *APIError
}

func (e *BlockedError) Error() string {
	corp := ""
	if e.CorpID != "" {
		corp = " for corp " + e.CorpID
	}
	return fmt.Sprintf("wecom: %s blocked%s until a probe at %s succeeds: %v (fix: %s)",
		e.API, corp, e.RetryAt.UTC().Format(time.RFC3339), e.Err, ConfigFix(e.Err.Code))
}

func (e *BlockedError) Unwrap() error { return e.Err }

// IsBlocked reports whether err is a *BlockedError or a configuration fault
// that just blocked its API; both mean "wait until RetryAt", see BlockedUntil.
func IsBlocked(err error) bool {
	var be *BlockedError
	return errors.As(err, &be)
}

// BlockedUntil returns when a blocked API's next probe may go.
func BlockedUntil(err error) (time.Time, bool) {
	var be *BlockedError
	if !errors.As(err, &be) {
		return time.Time{}, false
	}
	return be.RetryAt, true
}

// Blocked describes one blocked API, for status pages.
type Blocked struct {
	API    string    `json:"api"`
	CorpID string    `json:"corp_id,omitempty"`
	Code   int       `json:"errcode"`
	Msg    string    `json:"errmsg"` // for 60020 it names the egress IP
	Fix    string    `json:"fix"`
	Since  time.Time `json:"since"`
	// NextProbeAt is when a call is next let through to see if it healed.
	NextProbeAt time.Time `json:"next_probe_at"`
	// Probes counts the probes that failed so far.
	Probes int `json:"probes"`
}

type blockKey struct{ api, corp string }

type block struct {
	Blocked
	probing bool // a probe is in flight; other calls keep waiting
}

// gate decides whether a call of (api, corp) may go now. It returns a
// *BlockedError while the API is blocked, except for one probe once its
// time has come; probe is true for that call.
type gate struct {
	mu     sync.Mutex
	blocks map[blockKey]*block
}

func (g *gate) enter(api, corp string, now time.Time) (probe bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.blocks[blockKey{api, corp}]
	if b == nil {
		return false, nil
	}
	if b.probing || now.Before(b.NextProbeAt) {
		at := b.NextProbeAt
		if b.probing && !at.After(now) {
			at = now.Add(MinProbeInterval)
		}
		return false, &BlockedError{API: api, CorpID: corp, RetryAt: at, Err: &APIError{API: api, Code: b.Code, Msg: b.Msg}}
	}
	b.probing = true
	return true, nil
}

// leave records the outcome of a call that went through: a configuration
// fault blocks the API (or keeps it blocked, probing less often) and is
// returned as a *BlockedError; anything else ends a block.
func (g *gate) leave(api, corp string, probe bool, err error, now time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := blockKey{api, corp}
	b := g.blocks[k]
	var ae *APIError
	var be *BlockedError
	// Only this call's own answer blocks it: a token fetch's fault blocks
	// the token API, and reaches this call as that API's error.
	own := errors.As(err, &ae) && ae.API == api && !errors.As(err, &be)
	if !own || !IsConfigFault(err) {
		if probe && b != nil {
			if err == nil || own && IsPermanent(err) {
				delete(g.blocks, k) // the API itself answered: the fault is fixed
			} else {
				b.probing = false // no verdict (WeCom unavailable): probe again later
				b.NextProbeAt = now.Add(MinProbeInterval)
			}
		}
		return err
	}
	if b == nil {
		if g.blocks == nil {
			g.blocks = map[blockKey]*block{}
		}
		b = &block{Blocked: Blocked{API: api, CorpID: corp, Since: now}}
		g.blocks[k] = b
	} else if probe {
		b.Probes++
	}
	b.Code, b.Msg, b.Fix, b.probing = ae.Code, ae.Msg, ConfigFix(ae.Code), false
	b.NextProbeAt = now.Add(min(MinProbeInterval<<min(b.Probes, 10), MaxProbeInterval))
	return &BlockedError{API: api, CorpID: corp, RetryAt: b.NextProbeAt, Err: ae}
}

// list returns the blocked APIs, sorted.
func (g *gate) list() []Blocked {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Blocked, 0, len(g.blocks))
	for _, b := range g.blocks {
		out = append(out, b.Blocked)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].API != out[j].API {
			return out[i].API < out[j].API
		}
		return out[i].CorpID < out[j].CorpID
	})
	return out
}
