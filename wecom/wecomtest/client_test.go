package wecomtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// These tests go through wecom.Client: they check that the fake and the
// real client agree, on top of the raw-HTTP tests.

func TestServer_Client(t *testing.T) {
	t.Parallel()

	t.Run("APINamesMatchTheClients", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, wecom.APIGetToken, wecomtest.APIGetToken)
		require.Equal(t, wecom.APICorpGetToken, wecomtest.APIDownstreamGetToken)
		require.Equal(t, wecom.APIListAppShareInfo, wecomtest.APIListAppShareInfo)
		require.Equal(t, wecom.APIUnionIDToPendingID, wecomtest.APIUnionIDToPendingID)
		require.Equal(t, wecom.APIExternalUserIDToPendingID, wecomtest.APIExternalUserIDToPendingID)
		require.Equal(t, wecom.APIUnionIDToExternalUserID, wecomtest.APIUnionIDToExternalUserID)
		require.Equal(t, wecom.APIGroupChatGet, wecomtest.APIGroupChatGet)
	})

	t.Run("RegisterThenResolve", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := context.Background()
		client := b.srv.Client()
		d := b.srv.AddDealer("A")
		p, stranger := b.srv.AddPerson(), b.srv.AddPerson()
		pid, err := client.UnionIDToPendingID(ctx, p.UnionID, p.OpenID)
		require.NoError(t, err)
		c := b.srv.AddCustomer(d, p, d.Staff[0])
		cs := b.srv.AddCustomer(d, stranger, d.Staff[0])

		res, err := client.ExternalUserIDToPendingID(ctx, d.CorpID, "", []string{cs.ExternalUserID, c.ExternalUserID})
		require.NoError(t, err)
		require.Equal(t, []wecom.PendingResult{
			{ExternalUserID: cs.ExternalUserID},
			{ExternalUserID: c.ExternalUserID, PendingID: pid},
		}, res)
		require.Equal(t, 1, b.srv.Calls(wecomtest.APIGetToken), "the client caches the token")
	})

	t.Run("UnionIDToExternalUserID", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d := b.srv.AddDealer("A")
		p := b.srv.AddPerson()
		c := b.srv.AddCustomer(d, p, d.Staff[0])
		info, err := b.srv.Client().UnionIDToExternalUserID(context.Background(), p.UnionID, p.OpenID, "")
		require.NoError(t, err)
		require.Len(t, info, 1)
		require.Equal(t, d.CorpID, info[0].CorpID)
		require.Equal(t, c.ExternalUserID, info[0].ExternalUserID)
	})

	t.Run("ListAppShareInfoPages", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for range 150 {
			b.srv.AddDealer("D")
		}
		corps, err := b.srv.Client().ListAppShareInfo(context.Background())
		require.NoError(t, err)
		require.Len(t, corps, 150)
	})

	t.Run("DownstreamToken", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d := b.srv.AddDealer("A")
		p := b.srv.AddPerson()
		cfg := b.srv.ClientConfig()
		cfg.PendingToken = wecom.PendingTokenDownstream
		client, err := wecom.NewClient(cfg)
		require.NoError(t, err)
		defer client.Close()
		pid, err := client.UnionIDToPendingID(context.Background(), p.UnionID, p.OpenID)
		require.NoError(t, err)
		c := b.srv.AddCustomer(d, p, d.Staff[0])
		res, err := client.ExternalUserIDToPendingID(context.Background(), d.CorpID, "", []string{c.ExternalUserID})
		require.NoError(t, err)
		require.Equal(t, pid, res[0].PendingID)
		require.Equal(t, 1, b.srv.Calls(wecomtest.APIDownstreamGetToken))
	})

	// Ensure early token expiry (§4.1) is survivable: the client refreshes
	// on 42001 and retries once.
	t.Run("ClientRefreshesAnEarlyExpiredToken", func(t *testing.T) {
		t.Parallel()
		b := setup(t, wecomtest.WithFaults(wecomtest.Faults{TokenLifetime: time.Minute}))
		client := b.srv.Client()
		p := b.srv.AddPerson()
		_, err := client.UnionIDToPendingID(context.Background(), p.UnionID, p.OpenID)
		require.NoError(t, err)
		b.clock.Advance(2 * time.Minute)
		_, err = client.UnionIDToPendingID(context.Background(), p.UnionID, p.OpenID)
		require.NoError(t, err)
		require.Equal(t, 2, b.srv.Calls(wecomtest.APIGetToken))
		require.Equal(t, map[int]int{0: 2, 42001: 1}, b.srv.Errcodes(wecomtest.APIUnionIDToPendingID))
	})

	t.Run("ClientSurfacesQuota45009", func(t *testing.T) {
		t.Parallel()
		b := setup(t, wecomtest.WithQuotas(wecomtest.Quota{Hour: 1}, wecomtest.Quota{}))
		client := b.srv.Client()
		p := b.srv.AddPerson()
		_, err := client.UnionIDToPendingID(context.Background(), p.UnionID, p.OpenID)
		require.NoError(t, err)
		_, err = client.UnionIDToPendingID(context.Background(), p.UnionID, p.OpenID)
		require.True(t, wecom.IsRateLimited(err), "%v", err)
	})

	t.Run("ClientRetriesThroughFaults", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		client := b.srv.Client()
		p := b.srv.AddPerson()
		b.srv.FailNext(wecomtest.APIUnionIDToPendingID,
			wecomtest.Fault{Errcode: -1}, wecomtest.Fault{Status: 503}, wecomtest.Fault{Drop: true})
		_, err := client.UnionIDToPendingID(context.Background(), p.UnionID, p.OpenID)
		require.NoError(t, err)
		require.Equal(t, 4, b.srv.Calls(wecomtest.APIUnionIDToPendingID))
		require.True(t, b.clock.Now().After(t0), "backoff moved the fake clock instead of sleeping")
	})

	t.Run("ClosedWithTheServer", func(t *testing.T) {
		t.Parallel()
		srv := wecomtest.NewServer()
		client := srv.Client()
		srv.Close()
		p := srv.AddPerson()
		_, err := client.UnionIDToPendingID(context.Background(), p.UnionID, p.OpenID)
		require.Error(t, err)
	})

	t.Run("ClientBeforeStartPanics", func(t *testing.T) {
		t.Parallel()
		srv := wecomtest.NewUnstartedServer()
		require.PanicsWithValue(t, "wecomtest: ClientConfig called before Start", func() { srv.Client() })
	})
}
