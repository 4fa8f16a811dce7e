package crypto

import "strconv"

// Official error codes of the WXBizMsgCrypt samples, in the PHP/Python
// numbering (the Go samples number some of them differently).
const (
	CodeValidateSignature = -40001 // signature check failed
	CodeParseXML          = -40002 // XML parse failed
	CodeComputeSignature  = -40003 // SHA-1 computation failed
	CodeIllegalAESKey     = -40004 // invalid EncodingAESKey (also used for an invalid token)
	CodeValidateReceiveID = -40005 // receive id check failed
	CodeEncryptAES        = -40006 // AES encryption failed
	CodeDecryptAES        = -40007 // AES decryption failed
	CodeIllegalBuffer     = -40008 // decrypted buffer invalid (padding or length)
	CodeEncodeBase64      = -40009 // base64 encoding failed
	CodeDecodeBase64      = -40010 // base64 decoding failed
	CodeGenReturnXML      = -40011 // generating the reply XML failed
)

// Error is the error type of this package. It carries one of the official
// codes. Two *Error values match under errors.Is when their codes are equal,
// so errors.Is(err, ErrInvalidBuffer) holds for every buffer error whatever
// its message. Msg and Err never contain key material.
type Error struct {
	Code int    // one of the Code* constants
	Msg  string // what failed, lowercase, without the "crypto: " prefix
	Err  error  // underlying cause, if any
}

// Error returns a message like "crypto: invalid signature (-40001)",
// followed by ": cause" when Err is set.
func (e *Error) Error() string {
	s := "crypto: " + e.Msg + " (" + strconv.Itoa(e.Code) + ")"
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same Code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t != nil && t.Code == e.Code
}

// Sentinels, one per official code, for use with errors.Is. Errors returned
// by this package may carry a more specific Msg; they match by Code.
var (
	// ErrInvalidSignature: msg_signature does not match (-40001).
	ErrInvalidSignature error = &Error{Code: CodeValidateSignature, Msg: "invalid signature"}
	// ErrParseXML: the envelope is not the expected XML or lacks <Encrypt> (-40002).
	ErrParseXML error = &Error{Code: CodeParseXML, Msg: "parse xml"}
	// ErrComputeSignature: computing the signature failed (-40003). SHA-1
	// cannot fail, so this package never returns it; it exists for completeness.
	ErrComputeSignature error = &Error{Code: CodeComputeSignature, Msg: "compute signature"}
	// ErrInvalidAESKey: the EncodingAESKey (or the token) given to New is invalid (-40004).
	ErrInvalidAESKey error = &Error{Code: CodeIllegalAESKey, Msg: "invalid aes key"}
	// ErrInvalidReceiveID: the decrypted receive id is not accepted (-40005).
	// Decrypt does not check the receive id; callers return this from their policy.
	ErrInvalidReceiveID error = &Error{Code: CodeValidateReceiveID, Msg: "invalid receive id"}
	// ErrEncryptAES: encryption failed, e.g. the random source failed (-40006).
	ErrEncryptAES error = &Error{Code: CodeEncryptAES, Msg: "encrypt aes"}
	// ErrDecryptAES: the ciphertext is empty or not whole AES blocks (-40007).
	ErrDecryptAES error = &Error{Code: CodeDecryptAES, Msg: "decrypt aes"}
	// ErrInvalidBuffer: bad padding or lengths in the decrypted buffer (-40008).
	ErrInvalidBuffer error = &Error{Code: CodeIllegalBuffer, Msg: "invalid buffer"}
	// ErrEncodeBase64: base64 encoding failed (-40009); never returned, base64
	// encoding cannot fail.
	ErrEncodeBase64 error = &Error{Code: CodeEncodeBase64, Msg: "encode base64"}
	// ErrDecodeBase64: the ciphertext is not valid padded standard base64 (-40010).
	ErrDecodeBase64 error = &Error{Code: CodeDecodeBase64, Msg: "decode base64"}
	// ErrGenReturnXML: Seal cannot represent a field in CDATA (-40011).
	ErrGenReturnXML error = &Error{Code: CodeGenReturnXML, Msg: "generate xml"}
)

// newError returns a fresh *Error so callers can never mutate a sentinel.
func newError(code int, msg string, err error) error {
	return &Error{Code: code, Msg: msg, Err: err}
}
