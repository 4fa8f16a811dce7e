// Package crypto implements WeCom's callback message crypto (WXBizMsgCrypt):
// the msg_signature, AES-256-CBC with 32-byte PKCS#7 padding, the plaintext
// layout random|len|msg|receiveid, and the outer XML envelope.
//
// It uses the standard library only, does no I/O and never panics on any
// input: every malformed ciphertext yields an *Error carrying the official
// code. Randomness is passed in, so tests can be deterministic.
package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"io"
	"math"
)

const (
	// padBlock is the PKCS#7 block size WeCom uses: 32 bytes, not AES's 16.
	padBlock = 32
	// headerLen is random(16) + msg_len(4).
	headerLen = 20
	// maxTokenLen is the longest token the WeCom console accepts.
	maxTokenLen = 32
	// encodingAESKeyLen is the length of an EncodingAESKey.
	encodingAESKeyLen = 43
)

// Crypt signs, verifies, encrypts and decrypts WeCom callback messages for
// one Token/EncodingAESKey pair. It is immutable and safe for concurrent use.
type Crypt struct {
	token string
	iv    [aes.BlockSize]byte
	block cipher.Block // AES-256 with the decoded key, expanded once
}

// New returns a Crypt for the callback Token and EncodingAESKey configured
// in the WeCom console. The token must be 1 to 32 ASCII letters or digits,
// and the key exactly 43 characters of base64 that decode to 32 bytes.
// Otherwise New returns an error matching ErrInvalidAESKey; the error never
// contains the key or the token.
func New(token, encodingAESKey string) (*Crypt, error) {
	if !validToken(token) {
		return nil, newError(CodeIllegalAESKey, "invalid token: must be 1 to 32 letters or digits", nil)
	}
	if len(encodingAESKey) != encodingAESKeyLen {
		return nil, newError(CodeIllegalAESKey, "invalid aes key: must be 43 characters", nil)
	}
	// The base64 error is dropped on purpose: its offset would leak key structure.
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil || len(key) != 32 {
		return nil, newError(CodeIllegalAESKey, "invalid aes key: must be base64 of 32 bytes", nil)
	}
	block, err := aes.NewCipher(key)
	if err != nil { // unreachable with a 32-byte key; kept so New cannot panic
		return nil, newError(CodeIllegalAESKey, "invalid aes key", nil)
	}
	c := &Crypt{token: token, block: block}
	copy(c.iv[:], key[:aes.BlockSize])
	clear(key)
	return c, nil
}

func validToken(s string) bool {
	if len(s) == 0 || len(s) > maxTokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !('0' <= b && b <= '9' || 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z') {
			return false
		}
	}
	return true
}

// Signature returns the msg_signature of a message: the lowercase hex SHA-1
// of the token, timestamp, nonce and encrypted text sorted bytewise and
// joined without separators. encrypted is the <Encrypt> text of a POST or
// the (URL-decoded) echostr of a GET.
func (c *Crypt) Signature(timestamp, nonce, encrypted string) string {
	sum := c.sum(timestamp, nonce, encrypted)
	return hex.EncodeToString(sum[:])
}

// VerifySignature checks msgSignature against Signature(timestamp, nonce,
// encrypted) in constant time and returns an error matching
// ErrInvalidSignature on mismatch. Only lowercase hex matches, as in the
// official libraries.
func (c *Crypt) VerifySignature(msgSignature, timestamp, nonce, encrypted string) error {
	sum := c.sum(timestamp, nonce, encrypted)
	var want [2 * sha1.Size]byte
	hex.Encode(want[:], sum[:])
	if subtle.ConstantTimeCompare(want[:], []byte(msgSignature)) != 1 {
		return newError(CodeValidateSignature, "invalid signature", nil)
	}
	return nil
}

func (c *Crypt) sum(timestamp, nonce, encrypted string) [sha1.Size]byte {
	parts := [4]string{c.token, timestamp, nonce, encrypted}
	// Insertion sort: four elements, no allocation, bytewise like sort.Strings.
	for i := 1; i < len(parts); i++ {
		for j := i; j > 0 && parts[j] < parts[j-1]; j-- {
			parts[j], parts[j-1] = parts[j-1], parts[j]
		}
	}
	// Join into a stack buffer when it fits (real messages are ~1 KiB):
	// sha1.Sum does not retain it, so hashing a callback allocates nothing.
	var stack [2048]byte
	buf := stack[:0]
	if n := len(parts[0]) + len(parts[1]) + len(parts[2]) + len(parts[3]); n > len(stack) {
		buf = make([]byte, 0, n)
	}
	for _, p := range parts {
		buf = append(buf, p...)
	}
	return sha1.Sum(buf)
}

// Decrypt decodes and decrypts the <Encrypt> text of a POST or the echostr
// of a GET. It returns the message (event XML or echo string) and the
// receive id found in the plaintext. It does not check the receive id; the
// caller applies its policy and may return ErrInvalidReceiveID.
//
// msg and receiveID are sub-slices of one buffer allocated by this call:
// they stay valid for as long as the caller keeps them and are never reused
// by Crypt. msg's capacity ends where receiveID begins, so appending to msg
// copies instead of overwriting receiveID.
//
// Errors (all *Error): ErrDecodeBase64 when encrypted is not padded
// standard base64; ErrDecryptAES when the ciphertext is empty or not whole
// AES blocks; ErrInvalidBuffer when the padding is not 1..32 equal bytes,
// the unpadded plaintext is shorter than 20 bytes, or msg_len exceeds it.
// Decrypt does not verify the signature; call VerifySignature first.
func (c *Crypt) Decrypt(encrypted string) (msg, receiveID []byte, err error) {
	enc := base64.StdEncoding
	buf := make([]byte, enc.DecodedLen(len(encrypted)))
	n, err := enc.Decode(buf, []byte(encrypted))
	if err != nil {
		return nil, nil, newError(CodeDecodeBase64, "decode base64", err)
	}
	p := buf[:n]
	if len(p) == 0 || len(p)%aes.BlockSize != 0 {
		return nil, nil, newError(CodeDecryptAES, "decrypt aes: ciphertext is not whole blocks", nil)
	}
	c.decryptCBC(p)

	// Strict PKCS#7 over 32-byte blocks: 1..32 bytes, all equal to the count.
	pad := int(p[len(p)-1])
	if pad < 1 || pad > padBlock || pad > len(p) {
		return nil, nil, newError(CodeIllegalBuffer, "invalid padding", nil)
	}
	var diff byte
	for _, b := range p[len(p)-pad:] {
		diff |= b ^ byte(pad)
	}
	if diff != 0 {
		return nil, nil, newError(CodeIllegalBuffer, "invalid padding", nil)
	}
	p = p[:len(p)-pad]
	if len(p) < headerLen {
		return nil, nil, newError(CodeIllegalBuffer, "plaintext too short", nil)
	}
	// uint64 so that 20+msg_len cannot overflow on any platform.
	end := headerLen + uint64(binary.BigEndian.Uint32(p[16:headerLen]))
	if end > uint64(len(p)) {
		return nil, nil, newError(CodeIllegalBuffer, "message length exceeds plaintext", nil)
	}
	return p[headerLen:end:end], p[end:], nil
}

// decryptCBC decrypts whole AES blocks in place with IV = key[:16]. It walks
// backwards so every block's predecessor is still ciphertext when it is
// XORed in; that avoids both a copy and cipher.NewCBCDecrypter's allocation.
func (c *Crypt) decryptCBC(p []byte) {
	for end := len(p); end > 0; end -= aes.BlockSize {
		blk := p[end-aes.BlockSize : end]
		c.block.Decrypt(blk, blk)
		if end == aes.BlockSize {
			subtle.XORBytes(blk, blk, c.iv[:])
		} else {
			subtle.XORBytes(blk, blk, p[end-2*aes.BlockSize:end-aes.BlockSize])
		}
	}
}

// encryptCBC encrypts whole AES blocks in place with IV = key[:16].
func (c *Crypt) encryptCBC(p []byte) {
	prev := c.iv[:]
	for start := 0; start < len(p); start += aes.BlockSize {
		blk := p[start : start+aes.BlockSize]
		subtle.XORBytes(blk, blk, prev)
		c.block.Encrypt(blk, blk)
		prev = blk
	}
}

// Encrypt builds the plaintext random(16)|len(msg)|msg|receiveID, pads it to
// a multiple of 32 bytes, encrypts it and returns it base64-encoded. The 16
// random bytes are read from random, or from crypto/rand.Reader when random
// is nil. A failing reader, or a msg longer than 4 GiB, yields an error
// matching ErrEncryptAES.
func (c *Crypt) Encrypt(msg []byte, receiveID string, random io.Reader) (string, error) {
	if uint64(len(msg)) > math.MaxUint32 {
		return "", newError(CodeEncryptAES, "encrypt aes: message too long", nil)
	}
	if random == nil {
		random = rand.Reader
	}
	content := headerLen + len(msg) + len(receiveID)
	pad := padBlock - content%padBlock
	p := make([]byte, content+pad)
	if _, err := io.ReadFull(random, p[:16]); err != nil {
		return "", newError(CodeEncryptAES, "encrypt aes: read random", err)
	}
	binary.BigEndian.PutUint32(p[16:headerLen], uint32(len(msg)))
	copy(p[headerLen:], msg)
	copy(p[headerLen+len(msg):], receiveID)
	for i := content; i < len(p); i++ {
		p[i] = byte(pad)
	}
	c.encryptCBC(p)
	return base64.StdEncoding.EncodeToString(p), nil
}
