package crypto_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/crypto"
)

func mustNew(tb testing.TB, token, key string) *crypto.Crypt {
	tb.Helper()
	c, err := crypto.New(token, key)
	require.NoError(tb, err)
	return c
}

// rawCBC runs AES-256-CBC (IV = key[:16]) with the standard library, no
// padding, so tests can build and inspect plaintexts independently of the
// package under test.
func rawCBC(tb testing.TB, keyHex string, p []byte, encrypt bool) []byte {
	tb.Helper()
	key, err := hex.DecodeString(keyHex)
	require.NoError(tb, err)
	block, err := aes.NewCipher(key)
	require.NoError(tb, err)
	out := make([]byte, len(p))
	if encrypt {
		cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(out, p)
	} else {
		cipher.NewCBCDecrypter(block, key[:16]).CryptBlocks(out, p)
	}
	return out
}

// encryptRaw encrypts a hand-built plaintext (whole AES blocks) with the
// Vector C key and base64-encodes it.
func encryptRaw(tb testing.TB, plaintext []byte) string {
	tb.Helper()
	return base64.StdEncoding.EncodeToString(rawCBC(tb, vcKeyHex, plaintext, true))
}

// plaintext builds random(16)|len|msg|rid followed by pad copies of the pad
// byte, letting tests state a wrong msg_len or padding explicitly.
func plaintext(msgLen uint32, body string, pad int, padByte byte) []byte {
	p := make([]byte, 16, 64)
	copy(p, "0123456789abcdef")
	p = binary.BigEndian.AppendUint32(p, msgLen)
	p = append(p, body...)
	return append(p, bytes.Repeat([]byte{padByte}, pad)...)
}

func requireCode(tb testing.TB, err error, sentinel error, code int) {
	tb.Helper()
	require.Error(tb, err)
	require.ErrorIs(tb, err, sentinel)
	var ce *crypto.Error
	require.ErrorAs(tb, err, &ce)
	require.Equal(tb, code, ce.Code)
}

func TestNew(t *testing.T) {
	t.Parallel()

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		_, err := crypto.New(vcToken, vcAESKey)
		require.NoError(t, err)
		_, err = crypto.New(strings.Repeat("a1", 16), rustAESKey)
		require.NoError(t, err)
	})

	tests := []struct {
		name, token, key string
	}{
		{"ErrEmptyToken", "", vcAESKey},
		{"ErrTokenTooLong", strings.Repeat("a", 33), vcAESKey},
		{"ErrTokenNotAlphanumeric", "QDG6e-K", vcAESKey},
		{"ErrTokenNonASCII", "QDG6eK\u00e9", vcAESKey},
		{"ErrKeyEmpty", vcToken, ""},
		{"ErrKeyTooShort", vcToken, vcAESKey[:42]},
		{"ErrKeyTooLong", vcToken, vcAESKey + "A"},
		{"ErrKeyWithPadding", vcToken, vcAESKey[:42] + "="},
		{"ErrKeyNotBase64", vcToken, vcAESKey[:42] + "*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := crypto.New(tt.token, tt.key)
			require.Nil(t, c)
			requireCode(t, err, crypto.ErrInvalidAESKey, crypto.CodeIllegalAESKey)
			require.NotContains(t, err.Error(), vcAESKey[:20], "the key must never appear in an error")
		})
	}
}

func TestCrypt_Signature(t *testing.T) {
	t.Parallel()
	c := mustNew(t, vcToken, vcAESKey)

	t.Run("VectorC", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, vcSignature, c.Signature(vcTimestamp, vcNonce, vcEncrypt))
	})

	t.Run("ArgumentOrderDoesNotMatter", func(t *testing.T) {
		t.Parallel()
		// The four values are sorted before hashing, so swapping the inputs keeps the signature.
		require.Equal(t, vcSignature, c.Signature(vcNonce, vcTimestamp, vcEncrypt))
		require.Equal(t, vcSignature, c.Signature(vcEncrypt, vcNonce, vcTimestamp))
	})

	t.Run("LargeInput", func(t *testing.T) {
		t.Parallel()
		// Longer than the stack buffer: the heap path must hash the same way.
		enc := strings.Repeat("A", 5000)
		require.Equal(t, c.Signature(vcTimestamp, vcNonce, enc), c.Signature(vcNonce, vcTimestamp, enc))
		require.NoError(t, c.VerifySignature(c.Signature(vcTimestamp, vcNonce, enc), vcTimestamp, vcNonce, enc))
	})
}

func TestCrypt_VerifySignature(t *testing.T) {
	t.Parallel()
	c := mustNew(t, vcToken, vcAESKey)

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		require.NoError(t, c.VerifySignature(vcSignature, vcTimestamp, vcNonce, vcEncrypt))
	})

	// Vector C's tamper cases, plus forms that must not be accepted.
	tampered := "3" + vcSignature[1:]
	tests := []struct {
		name                        string
		sig, timestamp, nonce, data string
	}{
		{"ErrOneHexDigitChanged", tampered, vcTimestamp, vcNonce, vcEncrypt},
		{"ErrTimestampChanged", vcSignature, "1700000001", vcNonce, vcEncrypt},
		{"ErrNonceChanged", vcSignature, vcTimestamp, "1234567891", vcEncrypt},
		{"ErrEncryptChanged", vcSignature, vcTimestamp, vcNonce, "A" + vcEncrypt[1:]},
		{"ErrUppercaseHex", strings.ToUpper(vcSignature), vcTimestamp, vcNonce, vcEncrypt},
		{"ErrEmptySignature", "", vcTimestamp, vcNonce, vcEncrypt},
		{"ErrTruncatedSignature", vcSignature[:39], vcTimestamp, vcNonce, vcEncrypt},
		{"ErrOtherToken", mustNew(t, "OtherToken", vcAESKey).Signature(vcTimestamp, vcNonce, vcEncrypt), vcTimestamp, vcNonce, vcEncrypt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := c.VerifySignature(tt.sig, tt.timestamp, tt.nonce, tt.data)
			requireCode(t, err, crypto.ErrInvalidSignature, crypto.CodeValidateSignature)
			require.Equal(t, "crypto: invalid signature (-40001)", err.Error())
		})
	}
}

func TestCrypt_Decrypt_VectorC(t *testing.T) {
	t.Parallel()
	c := mustNew(t, vcToken, vcAESKey)

	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		msg, rid, err := c.Decrypt(vcEncrypt)
		require.NoError(t, err)
		require.Len(t, msg, 486)
		require.Equal(t, vcMsg, string(msg))
		require.Equal(t, vcReceiveID, string(rid))
	})

	t.Run("PlaintextHasPad20", func(t *testing.T) {
		t.Parallel()
		// Checked with the standard library: a 16-byte unpadder would reject this.
		ct, err := base64.StdEncoding.DecodeString(vcEncrypt)
		require.NoError(t, err)
		require.Len(t, vcEncrypt, 728)
		require.Len(t, ct, 544)
		p := rawCBC(t, vcKeyHex, ct, false)
		require.Equal(t, bytes.Repeat([]byte{20}, 20), p[len(p)-20:])
		require.Equal(t, vcRandom, string(p[:16]))
		require.Equal(t, uint32(486), binary.BigEndian.Uint32(p[16:20]))
	})

	t.Run("MsgAppendDoesNotClobberReceiveID", func(t *testing.T) {
		t.Parallel()
		msg, rid, err := c.Decrypt(vcEncrypt)
		require.NoError(t, err)
		_ = append(msg, "XXXXXXXXXXXXXXXXXXXX"...)
		require.Equal(t, vcReceiveID, string(rid))
	})

	t.Run("EachCallReturnsFreshBuffers", func(t *testing.T) {
		t.Parallel()
		msg1, _, err := c.Decrypt(vcEncrypt)
		require.NoError(t, err)
		msg1[0] = 'X'
		msg2, _, err := c.Decrypt(vcEncrypt)
		require.NoError(t, err)
		require.Equal(t, vcMsg, string(msg2))
	})

	t.Run("ErrTruncatedTo512Bytes", func(t *testing.T) {
		t.Parallel()
		ct, err := base64.StdEncoding.DecodeString(vcEncrypt)
		require.NoError(t, err)
		p := rawCBC(t, vcKeyHex, ct[:512], false)
		require.Equal(t, byte(0x33), p[len(p)-1], "last plaintext byte claims pad 51")
		_, _, err = c.Decrypt(base64.StdEncoding.EncodeToString(ct[:512]))
		requireCode(t, err, crypto.ErrInvalidBuffer, crypto.CodeIllegalBuffer)
	})

	t.Run("GETEchostrDecodedOnce", func(t *testing.T) {
		t.Parallel()
		// WeCom URL-encodes echostr; Go's query parsing decodes it exactly once.
		escaped := url.QueryEscape(vcEncrypt)
		require.Equal(t, 15, strings.Count(escaped, "%2B"))
		require.Equal(t, 15, strings.Count(escaped, "%2F"))
		require.Equal(t, 2, strings.Count(escaped, "%3D"))
		q, err := url.ParseQuery("msg_signature=" + vcSignature + "&timestamp=" + vcTimestamp +
			"&nonce=" + vcNonce + "&echostr=" + escaped)
		require.NoError(t, err)
		echostr := q.Get("echostr")
		require.NoError(t, c.VerifySignature(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), echostr))
		msg, rid, err := c.Decrypt(echostr)
		require.NoError(t, err)
		require.Equal(t, vcMsg, string(msg))
		require.Equal(t, vcReceiveID, string(rid))

		// Decoding a second time turns '+' into ' ', which is then rejected.
		twice, err := url.QueryUnescape(echostr)
		require.NoError(t, err)
		requireCode(t, c.VerifySignature(vcSignature, vcTimestamp, vcNonce, twice), crypto.ErrInvalidSignature, crypto.CodeValidateSignature)
		_, _, err = c.Decrypt(twice)
		requireCode(t, err, crypto.ErrDecodeBase64, crypto.CodeDecodeBase64)
	})
}

func TestCrypt_Decrypt_RustVector(t *testing.T) {
	t.Parallel()
	// The vector has no token; any valid one will do for decryption.
	c := mustNew(t, "token", rustAESKey)
	msg, rid, err := c.Decrypt(rustCiphertext)
	require.NoError(t, err)
	require.Equal(t, "test", string(msg))
	require.Equal(t, "rust", string(rid))

	ct, err := base64.StdEncoding.DecodeString(rustCiphertext)
	require.NoError(t, err)
	p := rawCBC(t, rustKeyHex, ct, false)
	require.Equal(t, "1234567890123456", string(p[:16]))
	require.Equal(t, []byte{4, 4, 4, 4}, p[28:])
}

func TestCrypt_Decrypt_Errors(t *testing.T) {
	t.Parallel()
	c := mustNew(t, vcToken, vcAESKey)

	aligned := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	tests := []struct {
		name      string
		encrypted string
		sentinel  error
		code      int
		reason    string // distinguishes checks that share a code
	}{
		{"ErrBase64IllegalCharacter", "!!!!" + vcEncrypt[4:], crypto.ErrDecodeBase64, crypto.CodeDecodeBase64, "decode base64"},
		{"ErrBase64MissingPadding", strings.TrimRight(vcEncrypt, "="), crypto.ErrDecodeBase64, crypto.CodeDecodeBase64, "decode base64"},
		{"ErrBase64URLAlphabet", strings.NewReplacer("+", "-", "/", "_").Replace(vcEncrypt), crypto.ErrDecodeBase64, crypto.CodeDecodeBase64, "decode base64"},
		{"ErrEmpty", "", crypto.ErrDecryptAES, crypto.CodeDecryptAES, "not whole blocks"},
		{"ErrOneByte", aligned(1), crypto.ErrDecryptAES, crypto.CodeDecryptAES, "not whole blocks"},
		{"ErrFifteenBytes", aligned(15), crypto.ErrDecryptAES, crypto.CodeDecryptAES, "not whole blocks"},
		{"ErrNotMultipleOf16", aligned(33), crypto.ErrDecryptAES, crypto.CodeDecryptAES, "not whole blocks"},
		{"ErrPad0", encryptRaw(t, plaintext(4, "testcorp", 4, 0)), crypto.ErrInvalidBuffer, crypto.CodeIllegalBuffer, "invalid padding"},
		{"ErrPad33", encryptRaw(t, plaintext(4, "test", 40, 33)), crypto.ErrInvalidBuffer, crypto.CodeIllegalBuffer, "invalid padding"},
		{"ErrPad255", encryptRaw(t, bytes.Repeat([]byte{255}, 32)), crypto.ErrInvalidBuffer, crypto.CodeIllegalBuffer, "invalid padding"},
		{"ErrPadLongerThanBuffer", encryptRaw(t, bytes.Repeat([]byte{20}, 16)), crypto.ErrInvalidBuffer, crypto.CodeIllegalBuffer, "invalid padding"},
		{"ErrPadBytesInconsistent", encryptRaw(t, append(plaintext(4, "test", 0, 0), 4, 4, 4, 4, 4, 4, 7, 4)), crypto.ErrInvalidBuffer, crypto.CodeIllegalBuffer, "invalid padding"},
		{"ErrPadFirstByteInconsistent", encryptRaw(t, append(plaintext(4, "test", 0, 0), 7, 8, 8, 8, 8, 8, 8, 8)), crypto.ErrInvalidBuffer, crypto.CodeIllegalBuffer, "invalid padding"},
		{"ErrShorterThan20AfterUnpad", encryptRaw(t, append(make([]byte, 19), bytes.Repeat([]byte{13}, 13)...)), crypto.ErrInvalidBuffer, crypto.CodeIllegalBuffer, "plaintext too short"},
		{"ErrEmptyAfterFullPad", encryptRaw(t, bytes.Repeat([]byte{32}, 32)), crypto.ErrInvalidBuffer, crypto.CodeIllegalBuffer, "plaintext too short"},
		{"ErrMsgLenPastEnd", encryptRaw(t, plaintext(13, "abcdefghijkl", 32, 32)), crypto.ErrInvalidBuffer, crypto.CodeIllegalBuffer, "message length exceeds plaintext"},
		{"ErrMsgLen0x7FFFFFFF", encryptRaw(t, plaintext(0x7FFFFFFF, "", 12, 12)), crypto.ErrInvalidBuffer, crypto.CodeIllegalBuffer, "message length exceeds plaintext"},
		{"ErrMsgLen0x80000000", encryptRaw(t, plaintext(0x80000000, "", 12, 12)), crypto.ErrInvalidBuffer, crypto.CodeIllegalBuffer, "message length exceeds plaintext"},
		{"ErrMsgLen0xFFFFFFFF", encryptRaw(t, plaintext(0xFFFFFFFF, "", 12, 12)), crypto.ErrInvalidBuffer, crypto.CodeIllegalBuffer, "message length exceeds plaintext"},
		{"ErrMsgLen0xFFFFFFEC", encryptRaw(t, plaintext(0xFFFFFFEC, "", 12, 12)), crypto.ErrInvalidBuffer, crypto.CodeIllegalBuffer, "message length exceeds plaintext"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msg, rid, err := c.Decrypt(tt.encrypted)
			requireCode(t, err, tt.sentinel, tt.code)
			require.Contains(t, err.Error(), tt.reason)
			require.Nil(t, msg)
			require.Nil(t, rid)
		})
	}

	t.Run("Base64ErrorUnwraps", func(t *testing.T) {
		t.Parallel()
		_, _, err := c.Decrypt("!!!!")
		var corrupt base64.CorruptInputError
		require.ErrorAs(t, err, &corrupt)
	})
}

func TestCrypt_Decrypt_Boundaries(t *testing.T) {
	t.Parallel()
	c := mustNew(t, vcToken, vcAESKey)

	tests := []struct {
		name      string
		plaintext []byte
		msg, rid  string
	}{
		// 20 header bytes + "test" + 8 bytes pad: msg_len ends exactly at the end, empty receive id.
		{"MsgFillsPlaintextEmptyReceiveID", plaintext(4, "test", 8, 8), "test", ""},
		{"EmptyMsgAndReceiveID", plaintext(0, "", 12, 12), "", ""},
		{"EmptyMsg", plaintext(0, "corp", 8, 8), "", "corp"},
		{"FullBlockOfPadding", plaintext(4, "testcorpcorp", 32, 32), "test", "corpcorp"},
		// §1.5 requires whole AES blocks, not whole 32-byte blocks, as the official libraries do.
		{"SixteenByteAlignedCiphertext", plaintext(4, "testcorp", 20, 20), "test", "corp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msg, rid, err := c.Decrypt(encryptRaw(t, tt.plaintext))
			require.NoError(t, err)
			require.Equal(t, tt.msg, string(msg))
			require.Equal(t, tt.rid, string(rid))
		})
	}
}

func TestCrypt_Encrypt(t *testing.T) {
	t.Parallel()
	c := mustNew(t, vcToken, vcAESKey)

	t.Run("ReproducesVectorC", func(t *testing.T) {
		t.Parallel()
		enc, err := c.Encrypt([]byte(vcMsg), vcReceiveID, strings.NewReader(vcRandom))
		require.NoError(t, err)
		require.Equal(t, vcEncrypt, enc)
	})

	t.Run("RoundTrip", func(t *testing.T) {
		t.Parallel()
		for n := 0; n <= 100; n++ {
			msg := bytes.Repeat([]byte{byte(n)}, n)
			for _, rid := range []string{"", "c", vcReceiveID, strings.Repeat("w", 33)} {
				enc, err := c.Encrypt(msg, rid, nil)
				require.NoError(t, err)
				ct, err := base64.StdEncoding.DecodeString(enc)
				require.NoError(t, err)
				require.Zero(t, len(ct)%32, "ciphertext is padded to 32 bytes")
				got, gotRID, err := c.Decrypt(enc)
				require.NoError(t, err)
				require.Equal(t, msg, got)
				require.Equal(t, rid, string(gotRID))
			}
		}
	})

	t.Run("RandomPrefixComesFromReader", func(t *testing.T) {
		t.Parallel()
		enc, err := c.Encrypt([]byte("m"), "r", strings.NewReader("ABCDEFGHIJKLMNOP"))
		require.NoError(t, err)
		ct, err := base64.StdEncoding.DecodeString(enc)
		require.NoError(t, err)
		require.Equal(t, "ABCDEFGHIJKLMNOP", string(rawCBC(t, vcKeyHex, ct, false)[:16]))
	})

	t.Run("NilReaderUsesCryptoRand", func(t *testing.T) {
		t.Parallel()
		a, err := c.Encrypt([]byte("m"), "r", nil)
		require.NoError(t, err)
		b, err := c.Encrypt([]byte("m"), "r", nil)
		require.NoError(t, err)
		require.NotEqual(t, a, b)
	})

	t.Run("ErrShortRandom", func(t *testing.T) {
		t.Parallel()
		_, err := c.Encrypt([]byte("m"), "r", strings.NewReader("short"))
		requireCode(t, err, crypto.ErrEncryptAES, crypto.CodeEncryptAES)
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	})

	t.Run("ErrFailingRandom", func(t *testing.T) {
		t.Parallel()
		boom := errors.New("boom")
		_, err := c.Encrypt([]byte("m"), "r", errReader{boom})
		requireCode(t, err, crypto.ErrEncryptAES, crypto.CodeEncryptAES)
		require.ErrorIs(t, err, boom)
	})
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestCrypt_ConcurrentUse(t *testing.T) {
	t.Parallel()
	c := mustNew(t, vcToken, vcAESKey)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 50 {
				enc, err := c.Encrypt([]byte(vcMsg), vcReceiveID, nil)
				if err != nil {
					errs <- err
					return
				}
				if msg, _, err := c.Decrypt(enc); err != nil || string(msg) != vcMsg {
					errs <- errors.New("round trip mismatch")
					return
				}
				if err := c.VerifySignature(vcSignature, vcTimestamp, vcNonce, vcEncrypt); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestError(t *testing.T) {
	t.Parallel()

	t.Run("MessageAndUnwrap", func(t *testing.T) {
		t.Parallel()
		cause := errors.New("cause")
		err := &crypto.Error{Code: crypto.CodeParseXML, Msg: "parse xml", Err: cause}
		require.Equal(t, "crypto: parse xml (-40002): cause", err.Error())
		require.ErrorIs(t, err, cause)
		require.ErrorIs(t, err, crypto.ErrParseXML)
	})

	t.Run("IsMatchesByCodeOnly", func(t *testing.T) {
		t.Parallel()
		err := &crypto.Error{Code: crypto.CodeIllegalBuffer, Msg: "anything"}
		require.ErrorIs(t, err, crypto.ErrInvalidBuffer)
		require.NotErrorIs(t, err, crypto.ErrDecryptAES)
		require.NotErrorIs(t, err, errors.New("crypto: invalid buffer (-40008)"))
	})

	t.Run("SentinelsHaveDistinctOfficialCodes", func(t *testing.T) {
		t.Parallel()
		sentinels := map[int]error{
			-40001: crypto.ErrInvalidSignature, -40002: crypto.ErrParseXML, -40003: crypto.ErrComputeSignature,
			-40004: crypto.ErrInvalidAESKey, -40005: crypto.ErrInvalidReceiveID, -40006: crypto.ErrEncryptAES,
			-40007: crypto.ErrDecryptAES, -40008: crypto.ErrInvalidBuffer, -40009: crypto.ErrEncodeBase64,
			-40010: crypto.ErrDecodeBase64, -40011: crypto.ErrGenReturnXML,
		}
		for code, sentinel := range sentinels {
			var ce *crypto.Error
			require.ErrorAs(t, sentinel, &ce)
			require.Equal(t, code, ce.Code)
			require.True(t, strings.HasPrefix(sentinel.Error(), "crypto: "))
			for other, s := range sentinels {
				if other != code {
					require.NotErrorIs(t, sentinel, s)
				}
			}
		}
	})

	t.Run("WrappedStillMatches", func(t *testing.T) {
		t.Parallel()
		c := mustNew(t, vcToken, vcAESKey)
		_, _, err := c.Decrypt("")
		wrapped := errors.Join(errors.New("handle callback"), err)
		require.ErrorIs(t, wrapped, crypto.ErrDecryptAES)
	})
}

// TestCrypt_Allocations pins the hot path's allocation budget: Decrypt
// allocates only the buffer it returns, and verification allocates nothing.
// Not parallel: AllocsPerRun counts every allocation in the process.
func TestCrypt_Allocations(t *testing.T) {
	c := mustNew(t, vcToken, vcAESKey)
	decrypt := testing.AllocsPerRun(100, func() {
		if _, _, err := c.Decrypt(vcEncrypt); err != nil {
			t.Fatal(err)
		}
	})
	require.LessOrEqual(t, decrypt, 1.0)
	verify := testing.AllocsPerRun(100, func() {
		if err := c.VerifySignature(vcSignature, vcTimestamp, vcNonce, vcEncrypt); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, verify)
}
