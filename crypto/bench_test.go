package crypto_test

import (
	"testing"

	"github.com/silenceper/wechat/v2/util"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/crypto"
)

// Both decrypt benchmarks use Vector C: a 728-character <Encrypt> that
// decodes to 544 bytes holding a 486-byte event.

func BenchmarkDecrypt(b *testing.B) {
	c, err := crypto.New(vcToken, vcAESKey)
	require.NoError(b, err)
	b.ReportAllocs()
	b.SetBytes(int64(len(vcEncrypt)))
	for b.Loop() {
		msg, _, err := c.Decrypt(vcEncrypt)
		if err != nil || len(msg) != len(vcMsg) {
			b.Fatal("decrypt failed")
		}
	}
}

// BenchmarkDecryptSilenceper is the peer: silenceper/wechat/v2 util.DecryptMsg,
// which also decodes the key and expands the AES schedule on every call.
func BenchmarkDecryptSilenceper(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(vcEncrypt)))
	for b.Loop() {
		_, msg, err := util.DecryptMsg(vcReceiveID, vcEncrypt, vcAESKey)
		if err != nil || len(msg) != len(vcMsg) {
			b.Fatal("decrypt failed")
		}
	}
}

func BenchmarkEncrypt(b *testing.B) {
	c, err := crypto.New(vcToken, vcAESKey)
	require.NoError(b, err)
	msg := []byte(vcMsg)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Encrypt(msg, vcReceiveID, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifySignature(b *testing.B) {
	c, err := crypto.New(vcToken, vcAESKey)
	require.NoError(b, err)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.VerifySignature(vcSignature, vcTimestamp, vcNonce, vcEncrypt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseEnvelope(b *testing.B) {
	body := []byte("<xml><ToUserName><![CDATA[" + vcReceiveID + "]]></ToUserName><Encrypt><![CDATA[" + vcEncrypt +
		"]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>")
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := crypto.ParseEnvelope(body); err != nil {
			b.Fatal(err)
		}
	}
}
