package crypto

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// requireSameAsEncodingXML asserts ParseEnvelope's defining property: it
// returns exactly what encoding/xml decoding into xmlEnvelope returns.
func requireSameAsEncodingXML(t *testing.T, body []byte) {
	t.Helper()
	got, gotErr := ParseEnvelope(body)
	want, wantErr := parseEnvelopeXML(body)
	require.Equal(t, want, got)
	require.Equal(t, wantErr == nil, gotErr == nil, "error mismatch: got %v, want %v", gotErr, wantErr)
	if gotErr != nil {
		require.ErrorIs(t, gotErr, ErrParseXML)
	}
}

func TestScanEnvelope(t *testing.T) {
	t.Parallel()

	// These must take the allocation-light path; otherwise the benchmark
	// would silently measure encoding/xml.
	fast := []string{
		"<xml><ToUserName><![CDATA[ww1]]></ToUserName><Encrypt><![CDATA[abc=]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>",
		"<xml>\n  <ToUserName><![CDATA[toUser]]></ToUserName>\n  <Encrypt><![CDATA[a+b/c=]]></Encrypt>\n  <AgentID><![CDATA[218]]></AgentID>\n</xml>\n",
		"<xml><ToUserName>ww1</ToUserName><Encrypt>abc=</Encrypt><AgentID>1</AgentID></xml>",
		"<xml><Encrypt></Encrypt></xml>",
		"<xml></xml>",
	}
	// Outside the subset: the scanner must decline, not guess.
	slow := []string{
		"",
		`<?xml version="1.0"?><xml><Encrypt>a</Encrypt></xml>`,
		"<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>",
		"<xml><Encrypt>a&amp;</Encrypt></xml>",
		"<xml><Encrypt>a]]></Encrypt></xml>",
		"<xml><Encrypt>a\rb</Encrypt></xml>",
		"<xml>\r\n<Encrypt>a</Encrypt></xml>",
		"<xml><Encrypt><![CDATA[a]]>b</Encrypt></xml>",
		"<xml><Encrypt >a</Encrypt></xml>",
		"<xml><Encrypt>a</Encrypt ></xml>",
		"<xml><Encrypt/></xml>",
		"<xml><x:Encrypt>a</x:Encrypt></xml>",
		"<xml><Foo><Bar>q</Bar></Foo></xml>",
		"<xml>text<Encrypt>a</Encrypt></xml>",
		"junk<xml><Encrypt>a</Encrypt></xml>",
		"<xml><Encrypt>\u00e9</Encrypt></xml>",
		"<xml><Encrypt>a</Encrypt>",
		"<XML><Encrypt>a</Encrypt></XML>",
	}
	for _, body := range fast {
		requireScan(t, body, true)
	}
	for _, body := range slow {
		requireScan(t, body, false)
	}
}

// requireScan requires scanEnvelope to take body (fast) or decline it, and
// parseEnvelope to answer as encoding/xml does either way.
func requireScan(t *testing.T, body string, fast bool) {
	t.Helper()
	_, ok := scanEnvelope([]byte(body))
	if fast {
		require.True(t, ok, "fast path expected for %q", body)
	} else {
		require.False(t, ok, "fast path must decline %q", body)
	}
	requireSameAsEncodingXML(t, []byte(body))
}

// TestParseEnvelope_Allocations: the fast path allocates one string for all
// fields. Not parallel: AllocsPerRun counts every allocation in the process.
func TestParseEnvelope_Allocations(t *testing.T) {
	body := []byte("<xml><ToUserName><![CDATA[ww1]]></ToUserName><Encrypt><![CDATA[abc=]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>")
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ParseEnvelope(body); err != nil {
			t.Fatal(err)
		}
	})
	require.LessOrEqual(t, allocs, 1.0)
}

func FuzzParseEnvelope(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		requireSameAsEncodingXML(t, body)
		env, err := ParseEnvelope(body)
		if err != nil {
			var ce *Error
			require.True(t, errors.As(err, &ce))
			require.Equal(t, CodeParseXML, ce.Code)
			return
		}
		require.NotEmpty(t, env.Encrypt)
	})
}

// BenchmarkParseEnvelopeEncodingXML measures the fallback on a body shaped
// like BenchmarkParseEnvelope's (same field lengths as Vector C).
func BenchmarkParseEnvelopeEncodingXML(b *testing.B) {
	body := []byte("<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[" +
		strings.Repeat("A", 728) + "]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseEnvelopeXML(body); err != nil {
			b.Fatal(err)
		}
	}
}
