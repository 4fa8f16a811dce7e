package wecom_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/wecom"
)

func TestPredicates(t *testing.T) {
	t.Parallel()

	apiErr := func(code int) error {
		// Wrapped, as callers see it after adding context.
		return fmt.Errorf("resolve event 42: %w", &wecom.APIError{API: wecom.APIUnionIDToPendingID, Code: code, Msg: "x"})
	}
	type want struct{ retryable, rateLimited, tokenInvalid, permanent, notCustomerYet bool }
	for _, tt := range []struct {
		name string
		err  error
		want want
	}{
		{"SystemBusy", apiErr(-1), want{retryable: true}},
		{"InvalidSecret", apiErr(40001), want{tokenInvalid: true, permanent: true}},
		{"InvalidToken", apiErr(40014), want{retryable: true, tokenInvalid: true}},
		{"TokenExpired", apiErr(42001), want{retryable: true, tokenInvalid: true}},
		{"FreqOutOfLimit", apiErr(45009), want{rateLimited: true}},
		{"ConcurrentOutOfLimit", apiErr(45033), want{retryable: true, rateLimited: true}},
		{"InvalidParameter", apiErr(40058), want{permanent: true}},
		{"InvalidExternalUserID", apiErr(40096), want{permanent: true}},
		{"NoPermission", apiErr(48002), want{permanent: true}},
		{"IPNotAllowed", apiErr(60020), want{permanent: true}},
		{"NotCustomerYet", apiErr(84061), want{notCustomerYet: true}},
		{"NoAppPermission", apiErr(301002), want{permanent: true}},
		{"EntityMismatch", apiErr(610017), want{permanent: true}},
		{"AppNotShared", apiErr(670001), want{permanent: true}},
		{"HTTP502", &wecom.HTTPStatusError{API: "x", StatusCode: 502}, want{retryable: true}},
		{"HTTP404", &wecom.HTTPStatusError{API: "x", StatusCode: 404}, want{retryable: true}},
		{"HTTP403", &wecom.HTTPStatusError{API: "x", StatusCode: 403}, want{retryable: true}},
		{"HTTP429", &wecom.HTTPStatusError{API: "x", StatusCode: 429, RetryAfter: time.Second}, want{retryable: true}},
		{"Quota", fmt.Errorf("w: %w", &quota.Error{Key: "k", Window: time.Hour, RetryAt: time.Unix(0, 0)}), want{rateLimited: true}},
		{"TooManyIDs", fmt.Errorf("%w: got 101", wecom.ErrTooManyIDs), want{permanent: true}},
		{"Timeout", &url.Error{Op: "Post", URL: "u", Err: &net.DNSError{IsTimeout: true}}, want{retryable: true}},
		{"DeadlineExceeded", context.DeadlineExceeded, want{retryable: true}},
		{"Canceled", context.Canceled, want{}},
		{"Nil", nil, want{}},
		{"Other", errors.New("other"), want{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := want{
				retryable:      wecom.IsRetryable(tt.err),
				rateLimited:    wecom.IsRateLimited(tt.err),
				tokenInvalid:   wecom.IsTokenInvalid(tt.err),
				permanent:      wecom.IsPermanent(tt.err),
				notCustomerYet: wecom.IsNotCustomerYet(tt.err),
			}
			require.Equal(t, tt.want, got)
		})
	}
}

func TestAPIError_Error(t *testing.T) {
	t.Parallel()
	err := &wecom.APIError{API: wecom.APIUnionIDToPendingID, Code: 45009, Msg: "api freq out of limit"}
	require.EqualError(t, err, "wecom: corpgroup/unionid_to_pending_id: errcode 45009: api freq out of limit")
}

func TestPendingIDWindows(t *testing.T) {
	t.Parallel()
	require.Equal(t, []quota.Window{
		{Length: time.Hour, Limit: 100_000}, {Length: 24 * time.Hour, Limit: 480_000}, {Length: 31 * 24 * time.Hour, Limit: 7_500_000},
	}, wecom.PendingIDWindows(wecom.PendingIDPerHour, wecom.PendingIDPerDay, wecom.PendingIDPerMonth))
}

func TestEgressIP(t *testing.T) {
	t.Parallel()

	ipErr := func(code int, msg string) error {
		return fmt.Errorf("check: %w", &wecom.APIError{API: wecom.APIListAppShareInfo, Code: code, Msg: msg})
	}
	for _, tt := range []struct {
		name string
		err  error
		want string // "": none
	}{
		{"WeComShape", ipErr(60020, "not allow to access from your ip, hint: [1700000000_1_abc], from ip: 203.0.113.7, more info at https://open.work.weixin.qq.com/devtool/query?e=60020"), "203.0.113.7"},
		{"SentenceEnd", ipErr(60020, "from ip: 198.51.100.20."), "198.51.100.20"},
		{"IPv6", ipErr(60020, "from ip: 2001:db8::1, more info"), "2001:db8::1"},
		{"NoIPInMsg", ipErr(60020, "not allow to access from your ip"), ""},
		{"NotAnIP", ipErr(60020, "from ip: 999.1.1.1"), ""},
		{"OtherCode", ipErr(48002, "from ip: 203.0.113.7"), ""},
		{"NotAPIError", errors.New("from ip: 203.0.113.7"), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ip, ok := wecom.EgressIP(tt.err)
			require.Equal(t, tt.want != "", ok)
			if ok {
				require.Equal(t, tt.want, ip.String())
			}
		})
	}
}
