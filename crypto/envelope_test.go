package crypto_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/crypto"
)

// vcBody is Vector C wrapped in the §2.2 envelope, as WeCom sends it.
const vcBody = "<xml><ToUserName><![CDATA[" + vcReceiveID + "]]></ToUserName><Encrypt><![CDATA[" + vcEncrypt +
	"]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>"

func TestParseEnvelope(t *testing.T) {
	t.Parallel()

	ok := []struct {
		name string
		body string
		want crypto.Envelope
	}{
		{"WeComShape", vcBody, crypto.Envelope{ToUserName: vcReceiveID, Encrypt: vcEncrypt, AgentID: "1000002"}},
		{"OfficialSampleLayout", "<xml>\n  <ToUserName><![CDATA[toUser]]></ToUserName>\n  <Encrypt><![CDATA[abc=]]></Encrypt>\n  <AgentID><![CDATA[218]]></AgentID>\n</xml>\n",
			crypto.Envelope{ToUserName: "toUser", Encrypt: "abc=", AgentID: "218"}},
		{"PlainText", "<xml><ToUserName>corp</ToUserName><Encrypt>abc=</Encrypt><AgentID>1</AgentID></xml>",
			crypto.Envelope{ToUserName: "corp", Encrypt: "abc=", AgentID: "1"}},
		{"AgentIDMissing", "<xml><ToUserName><![CDATA[suite]]></ToUserName><Encrypt><![CDATA[abc=]]></Encrypt></xml>",
			crypto.Envelope{ToUserName: "suite", Encrypt: "abc="}},
		{"AgentIDEmpty", "<xml><Encrypt><![CDATA[abc=]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>",
			crypto.Envelope{Encrypt: "abc="}},
		{"UnknownElementsIgnored", "<xml><Foo>bar</Foo><Encrypt>abc=</Encrypt><Baz><![CDATA[q]]></Baz></xml>",
			crypto.Envelope{Encrypt: "abc="}},
		{"AnyOrder", "<xml><AgentID>7</AgentID><Encrypt>abc=</Encrypt><ToUserName>c</ToUserName></xml>",
			crypto.Envelope{ToUserName: "c", Encrypt: "abc=", AgentID: "7"}},
		{"TrailingBytesIgnored", "<xml><Encrypt>abc=</Encrypt></xml>\n\x00junk", crypto.Envelope{Encrypt: "abc="}},
		// Outside the fast scanner's subset: encoding/xml decides.
		{"XMLDeclaration", `<?xml version="1.0" encoding="UTF-8"?><xml><Encrypt>abc=</Encrypt></xml>`, crypto.Envelope{Encrypt: "abc="}},
		{"CRLF", "<xml>\r\n<ToUserName>a\r\nb</ToUserName>\r\n<Encrypt>abc=</Encrypt>\r\n</xml>", crypto.Envelope{ToUserName: "a\nb", Encrypt: "abc="}},
		{"Entity", "<xml><ToUserName>a&amp;b</ToUserName><Encrypt>abc&#61;</Encrypt></xml>", crypto.Envelope{ToUserName: "a&b", Encrypt: "abc="}},
		{"Attributes", `<xml a="1"><Encrypt type="x">abc=</Encrypt></xml>`, crypto.Envelope{Encrypt: "abc="}},
		{"Comment", "<xml><!-- c --><Encrypt>abc=</Encrypt></xml>", crypto.Envelope{Encrypt: "abc="}},
		{"NonASCII", "<xml><ToUserName>企业</ToUserName><Encrypt>abc=</Encrypt></xml>", crypto.Envelope{ToUserName: "企业", Encrypt: "abc="}},
		{"MixedCDATAAndText", "<xml><Encrypt> <![CDATA[abc=]]> </Encrypt></xml>", crypto.Envelope{Encrypt: " abc= "}},
		{"NestedUnknown", "<xml><Foo><Bar/></Foo><Encrypt>abc=</Encrypt></xml>", crypto.Envelope{Encrypt: "abc="}},
	}
	for _, tt := range ok {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := crypto.ParseEnvelope([]byte(tt.body))
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			got, err = crypto.DecodeEnvelope(strings.NewReader(tt.body))
			require.NoError(t, err)
			require.Equal(t, tt.want, got, "DecodeEnvelope agrees")
		})
	}

	bad := []struct{ name, body string }{
		{"ErrEmptyBody", ""},
		{"ErrWhitespace", " \n"},
		{"ErrJSONEnvelope", `{"tousername":"corp","encrypt":"abc=","agentid":"1"}`},
		{"ErrEncryptMissing", "<xml><ToUserName>c</ToUserName><AgentID>1</AgentID></xml>"},
		{"ErrEncryptEmpty", "<xml><Encrypt><![CDATA[]]></Encrypt></xml>"},
		{"ErrEncryptSelfClosed", "<xml><Encrypt/></xml>"},
		{"ErrWrongRoot", "<root><Encrypt>abc=</Encrypt></root>"},
		{"ErrUnclosedRoot", "<xml><Encrypt>abc=</Encrypt>"},
		{"ErrMismatchedTags", "<xml><Encrypt>abc=</Encrpyt></xml>"},
		{"ErrUnknownEntity", "<xml><Encrypt>abc&foo;</Encrypt></xml>"},
		{"ErrHTML", "<!DOCTYPE html><html><body>hi</body></html>"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := crypto.ParseEnvelope([]byte(tt.body))
			requireCode(t, err, crypto.ErrParseXML, crypto.CodeParseXML)
			require.Zero(t, got)
			got, err = crypto.DecodeEnvelope(strings.NewReader(tt.body))
			requireCode(t, err, crypto.ErrParseXML, crypto.CodeParseXML)
			require.Zero(t, got)
		})
	}
}

func TestDecodeEnvelope_ReadError(t *testing.T) {
	t.Parallel()
	// Ensure a read error (a body cap, a dropped connection) stays visible to errors.Is.
	errCap := errors.New("body over the cap")
	_, err := crypto.DecodeEnvelope(io.MultiReader(strings.NewReader("<xml><Encrypt>ab"), iotest.ErrReader(errCap)))
	requireCode(t, err, crypto.ErrParseXML, crypto.CodeParseXML)
	require.ErrorIs(t, err, errCap)
}

func TestCrypt_Seal(t *testing.T) {
	t.Parallel()
	c := mustNew(t, vcToken, vcAESKey)

	t.Run("ReproducesVectorC", func(t *testing.T) {
		t.Parallel()
		body, sig, err := c.Seal([]byte(vcMsg), vcReceiveID, vcReceiveID, "1000002", vcTimestamp, vcNonce, strings.NewReader(vcRandom))
		require.NoError(t, err)
		require.Equal(t, vcBody, string(body))
		require.Equal(t, vcSignature, sig)
	})

	t.Run("RoundTripThroughParseVerifyDecrypt", func(t *testing.T) {
		t.Parallel()
		for _, to := range []string{"wwtestcorp", "", "企业 corp\twith\nspace"} {
			body, sig, err := c.Seal([]byte(vcMsg), "wwtestcorp", to, "1000002", "1700000123", "42", nil)
			require.NoError(t, err)
			env, err := crypto.ParseEnvelope(body)
			require.NoError(t, err)
			require.Equal(t, to, env.ToUserName)
			require.Equal(t, "1000002", env.AgentID)
			require.NoError(t, c.VerifySignature(sig, "1700000123", "42", env.Encrypt))
			msg, rid, err := c.Decrypt(env.Encrypt)
			require.NoError(t, err)
			require.Equal(t, vcMsg, string(msg))
			require.Equal(t, "wwtestcorp", string(rid))
		}
	})

	t.Run("ErrFieldNotCDATASafe", func(t *testing.T) {
		t.Parallel()
		for _, field := range []string{"a]]>b", "a\x00b", "a\rb", "\xff", "\uFFFE"} {
			body, sig, err := c.Seal([]byte("m"), "r", field, "1", vcTimestamp, vcNonce, nil)
			requireCode(t, err, crypto.ErrGenReturnXML, crypto.CodeGenReturnXML)
			require.Nil(t, body)
			require.Empty(t, sig)
			_, _, err = c.Seal([]byte("m"), "r", "corp", field, vcTimestamp, vcNonce, nil)
			requireCode(t, err, crypto.ErrGenReturnXML, crypto.CodeGenReturnXML)
		}
	})

	t.Run("ErrRandomFails", func(t *testing.T) {
		t.Parallel()
		_, _, err := c.Seal([]byte("m"), "r", "corp", "1", vcTimestamp, vcNonce, strings.NewReader(""))
		requireCode(t, err, crypto.ErrEncryptAES, crypto.CodeEncryptAES)
	})
}
