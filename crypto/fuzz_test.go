package crypto_test

import (
	"encoding/base64"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/crypto"
)

// decryptModel is §1.5 written out plainly, used as the oracle for
// plaintexts the fuzzer controls. code is 0 on success.
func decryptModel(p []byte) (msg, rid []byte, code int) {
	pad := int(p[len(p)-1])
	if pad < 1 || pad > 32 || pad > len(p) {
		return nil, nil, crypto.CodeIllegalBuffer
	}
	for _, b := range p[len(p)-pad:] {
		if int(b) != pad {
			return nil, nil, crypto.CodeIllegalBuffer
		}
	}
	p = p[:len(p)-pad]
	if len(p) < 20 {
		return nil, nil, crypto.CodeIllegalBuffer
	}
	n := uint64(binary.BigEndian.Uint32(p[16:20]))
	if n > uint64(len(p)-20) {
		return nil, nil, crypto.CodeIllegalBuffer
	}
	return p[20 : 20+n], p[20+n:], 0
}

// requireReencrypts is the round-trip property: whatever Decrypt accepts
// re-encrypts to something that decrypts to the same msg and receive id.
func requireReencrypts(t *testing.T, c *crypto.Crypt, msg, rid []byte) {
	t.Helper()
	enc, err := c.Encrypt(msg, string(rid), strings.NewReader("fuzzfuzzfuzzfuzz"))
	require.NoError(t, err)
	msg2, rid2, err := c.Decrypt(enc)
	require.NoError(t, err)
	require.Equal(t, msg, msg2)
	require.Equal(t, rid, rid2)
}

// FuzzDecrypt feeds Decrypt arbitrary text (base64 and length paths) and,
// separately, arbitrary plaintexts encrypted with the standard library
// (padding and msg_len paths, which random ciphertext rarely reaches). It
// must never panic, must agree with decryptModel, and every success must
// survive a re-encryption.
func FuzzDecrypt(f *testing.F) {
	c := mustNew(f, vcToken, vcAESKey)
	f.Fuzz(func(t *testing.T, encrypted string, plain []byte) {
		msg, rid, err := c.Decrypt(encrypted)
		if err != nil {
			var ce *crypto.Error
			require.ErrorAs(t, err, &ce)
			require.Contains(t, []int{crypto.CodeDecodeBase64, crypto.CodeDecryptAES, crypto.CodeIllegalBuffer}, ce.Code)
		} else {
			requireReencrypts(t, c, msg, rid)
		}

		plain = plain[:min(len(plain), 4096)/16*16]
		if len(plain) == 0 {
			return
		}
		wantMsg, wantRID, wantCode := decryptModel(plain)
		msg, rid, err = c.Decrypt(base64.StdEncoding.EncodeToString(rawCBC(t, vcKeyHex, plain, true)))
		if wantCode != 0 {
			requireCode(t, err, crypto.ErrInvalidBuffer, wantCode)
			return
		}
		require.NoError(t, err)
		require.Equal(t, wantMsg, msg)
		require.Equal(t, wantRID, rid)
		requireReencrypts(t, c, msg, rid)
	})
}
