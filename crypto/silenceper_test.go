package crypto_test

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/silenceper/wechat/v2/util"
	"github.com/stretchr/testify/require"
)

// TestCrypt_DifferentialSilenceper checks interoperability with
// silenceper/wechat/v2 util in both directions. silenceper also pads to 32
// bytes (its AESEncryptMsg uses BlockSize = 32), so with the same 16 random
// bytes both sides must produce byte-identical ciphertexts.
//
// silenceper rejects an empty receive id (it requires the plaintext to be
// longer than 20+msg_len), so receive ids here are 1..40 characters.
func TestCrypt_DifferentialSilenceper(t *testing.T) {
	t.Parallel()
	c := mustNew(t, vcToken, vcAESKey)
	rng := rand.New(rand.NewPCG(2024, 11)) // seeded: failures are reproducible
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

	for i := range 500 {
		msg := make([]byte, rng.IntN(2048))
		for j := range msg {
			msg[j] = byte(rng.Uint32())
		}
		rid := make([]byte, 1+rng.IntN(40))
		for j := range rid {
			rid[j] = alnum[rng.IntN(len(alnum))]
		}
		random := make([]byte, 16)
		for j := range random {
			random[j] = byte(rng.Uint32())
		}

		theirs, err := util.EncryptMsg(random, msg, string(rid), vcAESKey)
		require.NoError(t, err, "case %d", i)
		ours, err := c.Encrypt(msg, string(rid), bytes.NewReader(random))
		require.NoError(t, err, "case %d", i)
		require.Equal(t, string(theirs), ours, "case %d: same random must give the same ciphertext", i)

		// Ours decrypts theirs.
		gotMsg, gotRID, err := c.Decrypt(string(theirs))
		require.NoError(t, err, "case %d", i)
		require.Equal(t, msg, gotMsg, "case %d", i)
		require.Equal(t, rid, gotRID, "case %d", i)

		// Theirs decrypts ours, with its strict receive id check.
		gotRandom, theirMsg, err := util.DecryptMsg(string(rid), ours, vcAESKey)
		require.NoError(t, err, "case %d", i)
		require.Equal(t, random, gotRandom, "case %d", i)
		require.Equal(t, msg, theirMsg, "case %d", i)
	}
}

// TestCrypt_DifferentialSilenceper_VectorC: the peer agrees on the vector too.
func TestCrypt_DifferentialSilenceper_VectorC(t *testing.T) {
	t.Parallel()
	random, msg, err := util.DecryptMsg(vcReceiveID, vcEncrypt, vcAESKey)
	require.NoError(t, err)
	require.Equal(t, vcRandom, string(random))
	require.Equal(t, vcMsg, string(msg))
}
