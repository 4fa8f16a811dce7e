package wecomtest

import (
	"crypto/rand"
	"encoding/base64"
)

// RandomToken returns a callback-token-shaped random string of n letters
// and digits, for a fake app's Token or an admin token.
func RandomToken(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// RandomAESKey returns a random, valid 43-character EncodingAESKey.
func RandomAESKey() string {
	key := make([]byte, 32)
	rand.Read(key)
	return base64.StdEncoding.EncodeToString(key)[:43]
}
