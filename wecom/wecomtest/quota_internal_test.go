package wecomtest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Ensure the documented limits apply when the fields are left zero; calling
// 100,000 times over HTTP to prove it would be too slow.
func TestServer_QuotaDefaults(t *testing.T) {
	t.Parallel()
	srv := NewServer()
	defer srv.Close()
	require.Equal(t, Quota{Hour: 100_000, Day: 480_000, Month: 7_500_000}, srv.pquota.limit)
	require.Equal(t, Quota{Hour: 20_000, Day: 240_000, Month: -1}, srv.equota.limit)

	partial := NewServer(WithQuotas(Quota{Hour: 5}, Quota{Day: 7}))
	defer partial.Close()
	require.Equal(t, Quota{Hour: 5, Day: 480_000, Month: 7_500_000}, partial.pquota.limit)
	require.Equal(t, Quota{Hour: 20_000, Day: 7, Month: -1}, partial.equota.limit)
}
