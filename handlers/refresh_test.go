package handlers_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/wecom"
)

// TestCallback_UnknownReceiveIDRefreshesTheAllowlist: a dealer that joined
// since the allow-list was loaded is found by a refresh, so its first
// authentic event is stored, not refused; refreshes are rate-limited.
func TestCallback_UnknownReceiveIDRefreshesTheAllowlist(t *testing.T) {
	t.Parallel()
	const newDealer = "wwtestdealer0002"
	var refreshes atomic.Int32
	var tb *testBundle
	tb = setup(t, setupOpts{refresh: func(context.Context) error {
		if refreshes.Add(1) == 1 {
			tb.policy.Allow(newDealer) // WeCom now lists the new dealer
		}
		return nil
	}})

	code, _ := tb.postEvent(t, addEvent(newDealer, "wm-new"), newDealer)
	require.Equal(t, http.StatusOK, code, "stored after one refresh")
	require.EqualValues(t, 1, refreshes.Load())

	code, _ = tb.postEvent(t, addEvent("wwforged", "wm-x"), "wwforged")
	require.Equal(t, http.StatusForbidden, code)
	code, _ = tb.postEvent(t, addEvent("wwforged", "wm-y"), "wwforged")
	require.Equal(t, http.StatusForbidden, code)
	require.EqualValues(t, 1, refreshes.Load(), "at most one refresh per interval")

	tb.now = tb.now.Add(time.Minute)
	code, _ = tb.postEvent(t, addEvent("wwforged", "wm-z"), "wwforged")
	require.Equal(t, http.StatusForbidden, code, "still unknown to WeCom")
	require.EqualValues(t, 2, refreshes.Load())
}

// TestCallback_ShareChangeRefreshesTheAllowlist: WeCom's share-change event
// (stored as ignored) reloads the allow-list in the background.
func TestCallback_ShareChangeRefreshesTheAllowlist(t *testing.T) {
	t.Parallel()
	refreshed := make(chan struct{}, 1)
	tb := setup(t, setupOpts{refresh: func(context.Context) error {
		refreshed <- struct{}{}
		return nil
	}})
	ev := wecom.Event{ToUserName: testCorpID, FromUserName: "sys", CreateTime: 1700000000, MsgType: "event",
		Event: "share_chain_change"}
	code, _ := tb.postEvent(t, ev, testCorpID)
	require.Equal(t, http.StatusOK, code)
	select {
	case <-refreshed:
	case <-time.After(10 * time.Second):
		t.Fatal("no refresh after a share change")
	}
}
