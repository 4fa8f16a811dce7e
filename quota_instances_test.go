package main

import (
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// TestQuota_SharedByInstances: three instances' WeCom clients, each with its
// own limiter on the one database, register fans as fast as they can
// against a fake WeCom that enforces an hourly window of 60. Together they
// never make a call the window refuses, and they use all of it.
func TestQuota_SharedByInstances(t *testing.T) {
	t.Parallel()
	for _, engine := range storetest.Engines() {
		t.Run(engine.Name, func(t *testing.T) {
			t.Parallel()
			const window = 60
			wc := wecomtest.NewServer(wecomtest.WithQuotas(wecomtest.Quota{Hour: window, Day: 10 * window, Month: 100 * window}, wecomtest.Quota{}))
			t.Cleanup(wc.Close)
			db := engine.Open(t, store.Config{})
			people := make([]wecomtest.Person, 3*window)
			for i := range people {
				people[i] = wc.AddPerson()
			}

			var wg sync.WaitGroup
			for instance := range 3 {
				lim, err := quota.New(t.Context(), quota.Config{Key: "unionid_to_pending_id:" + wc.CorpID, Store: db,
					Now: wc.Clock.Now, Windows: wecom.PendingIDWindows(window, 10*window, 100*window)})
				require.NoError(t, err)
				client, err := wecom.NewClient(wecom.Config{BaseURL: wc.URL, CorpID: wc.CorpID, AgentID: wc.AgentID,
					CorpSecret: wc.CorpSecret, HTTPClient: wc.HTTPClient(), Now: wc.Clock.Now, PendingIDQuota: lim})
				require.NoError(t, err)
				t.Cleanup(client.Close)
				wg.Go(func() {
					for i := instance; i < len(people); i += 3 {
						_, err := client.UnionIDToPendingID(t.Context(), people[i].UnionID, people[i].OpenID)
						var qe *quota.Error
						if errors.As(err, &qe) {
							return // the window is full: this instance stops
						}
						if err != nil {
							t.Errorf("instance %d: %v", instance, err)
							return
						}
					}
				})
			}
			wg.Wait()
			calls := wc.Calls(wecomtest.APIUnionIDToPendingID)
			require.Zero(t, wc.Errcodes(wecomtest.APIUnionIDToPendingID)[wecom.CodeAPIFreqOutOfLimit], "WeCom refused nothing")
			require.LessOrEqual(t, calls, window)
			require.GreaterOrEqual(t, calls, window*95/100, "together they use the window")
		})
	}
}
