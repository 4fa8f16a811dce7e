package wecom

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestClient_backoff(t *testing.T) {
	t.Parallel()
	c := &Client{retry: RetryPolicy{MaxAttempts: 40, BaseDelay: 200 * time.Millisecond, MaxDelay: 5 * time.Second}}
	for attempt := 1; attempt < 40; attempt++ {
		ceiling := min(5*time.Second, 200*time.Millisecond<<min(attempt-1, 20))
		for range 50 {
			d := c.backoff(attempt)
			require.GreaterOrEqual(t, d, time.Duration(0))
			require.LessOrEqual(t, d, ceiling, "attempt %d", attempt)
		}
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()

	t.Run("StripsQuery", func(t *testing.T) {
		t.Parallel()
		cause := errors.New("connection reset by peer")
		err := redact(&url.Error{Op: "Post", URL: "https://qyapi.weixin.qq.com/cgi-bin/x?access_token=SECRET", Err: cause})
		require.EqualError(t, err, `Post "https://qyapi.weixin.qq.com/cgi-bin/x": connection reset by peer`)
		require.ErrorIs(t, err, cause)
	})

	t.Run("KeepsOtherErrors", func(t *testing.T) {
		t.Parallel()
		cause := errors.New("other")
		require.Equal(t, cause, redact(cause))
	})
}
