package wecom

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pendinglink/pendinglink/quota"
)

// WeCom errcodes that pendinglink acts on (protocol reference §5; meanings
// from the global code page, docs 90313/90455). Every other non-zero code is
// permanent for our purposes.
const (
	// CodeSystemBusy (-1, 系统繁忙): transient; retried with jittered backoff.
	CodeSystemBusy = -1
	// CodeInvalidSecret (40001, invalid credential): usually a wrong secret,
	// but also sent for a stale token, so the client refreshes the token once
	// before giving up; after that it is a configuration error to alert on.
	CodeInvalidSecret = 40001
	// CodeInvalidToken (40014): the token was revoked or is wrong; the client
	// drops it, fetches a new one and retries the call once, unless the token
	// is younger than Config.TokenRefreshInterval (then the caller retries).
	CodeInvalidToken = 40014
	// CodeTokenExpired (42001): handled exactly like CodeInvalidToken.
	CodeTokenExpired = 42001
	// CodeAPIFreqOutOfLimit (45009): a WeCom quota window is exhausted and the
	// block lasts the whole window, so the client never spins on it; the
	// caller defers the work.
	CodeAPIFreqOutOfLimit = 45009
	// CodeAPIConcurrentOutOfLimit (45033): too many concurrent calls; retried
	// with jittered backoff, and callers should lower their concurrency.
	CodeAPIConcurrentOutOfLimit = 45033
	// CodeInvalidParameter (40058): a malformed request (e.g. >100 ids); a bug.
	CodeInvalidParameter = 40058
	// CodeInvalidExternalUserID (40096): an id from the wrong corp or view;
	// callers split the batch to isolate it (§9 #12).
	CodeInvalidExternalUserID = 40096
	// CodeNoPermission (48002): the app lacks 客户联系 or is not allowed to call
	// the API; the client logs which token the call used (§9 #3).
	CodeNoPermission = 48002
	// CodeIPNotAllowed (60020): the egress IP is not on the app's trusted-IP
	// list; an alertable configuration error (§6, §9 #13).
	CodeIPNotAllowed = 60020
	// CodeOutOfScope (50002, 成员不在权限范围): outside the app's visible
	// range; for a batch lookup it may concern one customer's member only
	// (unconfirmed), so batches are split to isolate it.
	CodeOutOfScope = 50002
	// CodeNotCustomerYet (84061, 不存在外部联系人的关系): can be transient
	// right after an add, so the pipeline retries it once after a delay (§9 #5).
	CodeNotCustomerYet = 84061
	// CodeNoAppPermission (301002): the token or agentid belongs to another
	// app, typically upstream and downstream mixed up; logged with the token kind.
	CodeNoAppPermission = 301002
	// CodeAppNotShared (670001): the downstream corp no longer shares the app;
	// the client forgets the agentid it looked up for that corp.
	CodeAppNotShared = 670001
)

// APIError is a response from WeCom with a non-zero errcode. It is built in
// one place, from the errcode and errmsg every response carries, and never
// contains the access_token or the secret.
type APIError struct {
	API  string // API path under /cgi-bin/, e.g. "corpgroup/unionid_to_pending_id"
	Code int    // errcode
	Msg  string // errmsg as WeCom sent it
}

// Error returns a message like
// "wecom: corpgroup/unionid_to_pending_id: errcode 45009: api freq out of limit".
func (e *APIError) Error() string {
	return "wecom: " + e.API + ": errcode " + strconv.Itoa(e.Code) + ": " + e.Msg
}

// HTTPStatusError is an answer from WeCom (or a proxy in front of it) whose
// HTTP status is not 200. WeCom itself always answers 200, with an errcode,
// so such an answer comes from its edge or an egress proxy (a 429 window, a
// 403 from a firewall, a 502) and says nothing about the request: it is
// always retryable, never permanent.
type HTTPStatusError struct {
	API        string // API path under /cgi-bin/
	StatusCode int
	// RetryAfter is the answer's Retry-After header (seconds or an HTTP
	// date), capped at an hour; zero when absent. The client waits this long
	// before its own retry, and callers defer the work by as much.
	RetryAfter time.Duration
}

// Error returns a message like "wecom: gettoken: http status 502", with
// " (retry after 12s)" when the answer said so.
func (e *HTTPStatusError) Error() string {
	msg := "wecom: " + e.API + ": http status " + strconv.Itoa(e.StatusCode)
	if e.RetryAfter > 0 {
		msg += " (retry after " + e.RetryAfter.String() + ")"
	}
	return msg
}

// RetryAfter returns how long the answer behind err asked callers to wait
// (an HTTP Retry-After header), and whether it asked at all.
func RetryAfter(err error) (time.Duration, bool) {
	var se *HTTPStatusError
	if errors.As(err, &se) && se.RetryAfter > 0 {
		return se.RetryAfter, true
	}
	return 0, false
}

// transportError marks a failed exchange with WeCom: dial, TLS, timeout, a
// dropped connection, a truncated body, or a 200 whose body is not a WeCom
// answer (a proxy's HTML page). Its cause has had the query string
// (access_token, corpsecret) removed.
type transportError struct {
	api string
	err error
}

func (e *transportError) Error() string { return "wecom: " + e.api + ": " + e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// Local errors: the client returns them (wrapped) without calling WeCom.
var (
	// ErrTooManyIDs: more than 100 external_userids were passed to
	// ExternalUserIDToPendingID; split the batch.
	ErrTooManyIDs = errors.New("wecom: more than 100 external_userids in one call")
	// ErrInvalidArgument: a required argument is empty.
	ErrInvalidArgument = errors.New("wecom: invalid argument")
	// ErrNotShared: the downstream corp is not in list_app_share_info, so no
	// downstream agentid (and token) is known for it.
	ErrNotShared = errors.New("wecom: corp does not share the app")
)

func apiCode(err error) (int, bool) {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code, true
	}
	return 0, false
}

// IsRetryable reports whether retrying the same call soon may succeed:
// errcode -1 and 45033, a rejected token (40014, 42001: the client
// refetches it at most once per Config.TokenRefreshInterval), network
// errors, timeouts, any non-200 HTTP status and bodies that are not a WeCom
// answer. A caller's
// context cancellation is not retryable. The client already retries these
// up to RetryPolicy.MaxAttempts, so a returned retryable error means WeCom
// stayed unavailable for that long.
func IsRetryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if code, ok := apiCode(err); ok {
		switch code {
		case CodeSystemBusy, CodeAPIConcurrentOutOfLimit, CodeInvalidToken, CodeTokenExpired:
			return true
		}
		return false
	}
	var se *HTTPStatusError
	if errors.As(err, &se) {
		return true
	}
	var te *transportError
	if errors.As(err, &te) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// IsRateLimited reports whether err says "too many calls": errcode 45009 or
// 45033 from WeCom, or a *quota.Error from a local Limiter. Callers defer the
// work rather than retry at once; a *quota.Error carries the RetryAt time.
func IsRateLimited(err error) bool {
	var qe *quota.Error
	if errors.As(err, &qe) {
		return true
	}
	code, ok := apiCode(err)
	return ok && (code == CodeAPIFreqOutOfLimit || code == CodeAPIConcurrentOutOfLimit)
}

// IsTokenInvalid reports whether WeCom rejected the access_token: errcode
// 40014, 42001 or 40001. The client has already refreshed the token once
// and retried when it returns such an error, or found the token too young
// to refetch (Config.TokenRefreshInterval).
func IsTokenInvalid(err error) bool {
	code, ok := apiCode(err)
	return ok && (code == CodeInvalidToken || code == CodeTokenExpired || code == CodeInvalidSecret)
}

// IsNotCustomerYet reports whether err is errcode 84061 (no external-contact
// relationship), which can be transient right after an add; the pipeline
// retries it once, delayed (§9 #5).
func IsNotCustomerYet(err error) bool {
	code, ok := apiCode(err)
	return ok && code == CodeNotCustomerYet
}

// IsPermanent reports whether retrying cannot help: every errcode other than
// -1, 45009, 45033, 40014, 42001 and 84061 (so 40001, 40058, 40096, 48002,
// 60020, 301002, 670001, 610014–610017, … are permanent), and the local
// errors ErrTooManyIDs, ErrInvalidArgument and ErrNotShared. Only a parsed
// errcode is WeCom's verdict on the request: an HTTP status is never
// permanent. 40001 counts as both token-invalid and permanent: the client
// has already tried a fresh token, so the secret itself is wrong.
func IsPermanent(err error) bool {
	if errors.Is(err, ErrTooManyIDs) || errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrNotShared) {
		return true
	}
	code, ok := apiCode(err)
	if !ok {
		return false
	}
	switch code {
	case 0, CodeSystemBusy, CodeAPIFreqOutOfLimit, CodeAPIConcurrentOutOfLimit,
		CodeInvalidToken, CodeTokenExpired, CodeNotCustomerYet:
		return false
	}
	return true
}

// fromIP finds the caller's address in a 60020 errmsg, e.g. "not allow to
// access from your ip, hint: [...], from ip: 203.0.113.7, more info at ...".
var fromIP = regexp.MustCompile(`from ip:\s*([0-9A-Fa-f.:]+)`)

// EgressIP returns the IP address WeCom saw a call come from, as the errmsg
// of a 60020 (IP not on the trusted list) names it: the address to add to
// the app's 企业可信IP.
func EgressIP(err error) (netip.Addr, bool) {
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != CodeIPNotAllowed {
		return netip.Addr{}, false
	}
	m := fromIP.FindStringSubmatch(ae.Msg)
	if m == nil {
		return netip.Addr{}, false
	}
	// A sentence may end right after the address.
	ip, perr := netip.ParseAddr(strings.TrimRight(m[1], ".:"))
	return ip, perr == nil
}
