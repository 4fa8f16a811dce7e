package wecom_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

func TestClient_CheckToken(t *testing.T) {
	t.Parallel()

	t.Run("FetchesOnceThenCached", func(t *testing.T) {
		t.Parallel()
		srv := wecomtest.NewServer()
		t.Cleanup(srv.Close)
		c := srv.Client()
		require.NoError(t, c.CheckToken(t.Context()))
		require.NoError(t, c.CheckToken(t.Context()))
		require.Equal(t, 1, srv.Calls(wecomtest.APIGetToken))
	})

	for _, tc := range []struct {
		name     string
		corp     string
		secret   string
		wantCode int
	}{
		{"ErrWrongCorpID", "wwtestnosuchcorp", "", 40013},
		{"ErrWrongSecret", "", "testsecret-wrong", wecom.CodeInvalidSecret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := wecomtest.NewServer()
			t.Cleanup(srv.Close)
			cfg := srv.ClientConfig()
			if tc.corp != "" {
				cfg.CorpID = tc.corp
			}
			if tc.secret != "" {
				cfg.CorpSecret = tc.secret
			}
			c, err := wecom.NewClient(cfg)
			require.NoError(t, err)
			t.Cleanup(c.Close)
			err = c.CheckToken(t.Context())
			var ae *wecom.APIError
			require.True(t, errors.As(err, &ae), "%v", err)
			require.Equal(t, wecom.APIGetToken, ae.API)
			require.Equal(t, tc.wantCode, ae.Code)
			require.NotContains(t, err.Error(), cfg.CorpSecret)
		})
	}
}
