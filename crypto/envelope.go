package crypto

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"unicode/utf8"
)

// Envelope is the outer XML body of a callback POST:
//
//	<xml><ToUserName/><Encrypt/><AgentID/></xml>
//
// ToUserName and AgentID are not signed; trust only the decrypted copy.
type Envelope struct {
	ToUserName string // corp id (or suite id); unsigned
	Encrypt    string // base64 ciphertext; the value that is signed and decrypted
	AgentID    string // may be empty (suite callbacks)
}

// xmlEnvelope defines ParseEnvelope's semantics: the fast scanner must agree
// with encoding/xml decoding into this type on every input it accepts.
type xmlEnvelope struct {
	XMLName    xml.Name `xml:"xml"`
	ToUserName string   `xml:"ToUserName"`
	Encrypt    string   `xml:"Encrypt"`
	AgentID    string   `xml:"AgentID"`
}

// ParseEnvelope parses a callback POST body. The root element must be
// <xml>; other elements are ignored. A body that is not XML (a JSON
// envelope included), or whose <Encrypt> is missing or empty, yields an
// error matching ErrParseXML. Cap the body size before calling.
//
// The shape WeCom sends (ASCII, text or one CDATA section per element) is
// read by a small scanner with one allocation; anything else falls back to
// encoding/xml, with identical results (checked by FuzzParseEnvelope).
func ParseEnvelope(body []byte) (Envelope, error) {
	f, ok := scanEnvelope(body)
	if !ok {
		return parseEnvelopeXML(body)
	}
	if len(f[fieldEncrypt]) == 0 {
		return Envelope{}, newError(CodeParseXML, "parse xml: missing Encrypt", nil)
	}
	// One allocation holds all three strings.
	var sb strings.Builder
	sb.Grow(len(f[0]) + len(f[1]) + len(f[2]))
	for _, v := range f {
		sb.Write(v)
	}
	s := sb.String()
	a, b := len(f[0]), len(f[0])+len(f[1])
	return Envelope{ToUserName: s[:a], Encrypt: s[a:b], AgentID: s[b:]}, nil
}

func parseEnvelopeXML(body []byte) (Envelope, error) {
	return DecodeEnvelope(bytes.NewReader(body))
}

// DecodeEnvelope is ParseEnvelope reading from r, so that a caller need not
// hold the whole body: it reads up to the end of the root element, with the
// same results as ParseEnvelope. Errors match ErrParseXML and wrap any read
// error of r (such as *http.MaxBytesError). Cap r before calling.
func DecodeEnvelope(r io.Reader) (Envelope, error) {
	var v xmlEnvelope
	if err := xml.NewDecoder(r).Decode(&v); err != nil {
		return Envelope{}, newError(CodeParseXML, "parse xml", err)
	}
	if v.Encrypt == "" {
		return Envelope{}, newError(CodeParseXML, "parse xml: missing Encrypt", nil)
	}
	return Envelope{ToUserName: v.ToUserName, Encrypt: v.Encrypt, AgentID: v.AgentID}, nil
}

const (
	fieldToUserName = iota
	fieldEncrypt
	fieldAgentID
)

// scanEnvelope reads the strict subset
//
//	ws "<xml>" { ws "<" Name ">" (Text | "<![CDATA[" Text "]]>") "</" Name ">" } ws "</xml>"
//
// where ws is spaces, tabs and newlines, Name is ASCII, and Text is printable
// ASCII, tabs and newlines (plain text also without '&' and ']'). Whatever
// follows </xml> is ignored, as encoding/xml ignores it. ok is false for any
// input outside the subset (not necessarily invalid XML); a known element
// that repeats is also outside it. Inside the subset encoding/xml would
// return exactly these field values, because there are no entities, no
// nesting, no attributes and nothing to normalise.
func scanEnvelope(b []byte) (f [3][]byte, ok bool) {
	var seen [3]bool
	i := skipSpace(b, 0)
	if !hasPrefixAt(b, i, "<xml>") {
		return f, false
	}
	i += len("<xml>")
	for {
		i = skipSpace(b, i)
		if hasPrefixAt(b, i, "</xml>") {
			return f, true
		}
		if i >= len(b) || b[i] != '<' {
			return f, false
		}
		i++
		start := i
		for i < len(b) && isNameByte(b[i]) {
			i++
		}
		if i == start || i >= len(b) || b[i] != '>' || !isNameStart(b[start]) {
			return f, false
		}
		name := b[start:i]
		i++

		var text []byte
		if hasPrefixAt(b, i, "<![CDATA[") {
			i += len("<![CDATA[")
			k := bytes.Index(b[i:], []byte("]]>"))
			if k < 0 {
				return f, false
			}
			text = b[i : i+k]
			i += k + len("]]>")
		} else {
			k := bytes.IndexByte(b[i:], '<')
			if k < 0 {
				return f, false
			}
			text = b[i : i+k]
			if bytes.IndexByte(text, '&') >= 0 || bytes.IndexByte(text, ']') >= 0 {
				return f, false
			}
			i += k
		}
		if !plainText(text) {
			return f, false
		}

		if !hasPrefixAt(b, i, "</") {
			return f, false
		}
		i += len("</")
		if !bytes.HasPrefix(b[i:], name) {
			return f, false
		}
		i += len(name)
		if i >= len(b) || b[i] != '>' {
			return f, false
		}
		i++

		idx := -1
		switch string(name) { // no allocation: the compiler special-cases this
		case "ToUserName":
			idx = fieldToUserName
		case "Encrypt":
			idx = fieldEncrypt
		case "AgentID":
			idx = fieldAgentID
		}
		if idx >= 0 {
			if seen[idx] {
				return f, false
			}
			seen[idx] = true
			f[idx] = text
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n') {
		i++
	}
	return i
}

func hasPrefixAt(b []byte, i int, prefix string) bool {
	return i <= len(b) && len(b)-i >= len(prefix) && string(b[i:i+len(prefix)]) == prefix
}

func isNameStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_'
}

func isNameByte(c byte) bool {
	return isNameStart(c) || '0' <= c && c <= '9' || c == '-' || c == '.'
}

// plainText reports whether t is printable ASCII, tabs and newlines only:
// characters that XML passes through unchanged (unlike '\r').
func plainText(t []byte) bool {
	for _, c := range t {
		if (c < 0x20 || c > 0x7e) && c != '\t' && c != '\n' {
			return false
		}
	}
	return true
}

// Seal encrypts msg for receiveID and returns what WeCom would send: the
// POST body (the envelope with CDATA sections) and its msg_signature for
// the given timestamp and nonce. random is as for Encrypt. A toUserName or
// agentID that cannot be put in CDATA (invalid UTF-8, control characters
// other than tab and newline, or "]]>") yields an error matching
// ErrGenReturnXML.
func (c *Crypt) Seal(msg []byte, receiveID, toUserName, agentID, timestamp, nonce string, random io.Reader) (body []byte, msgSignature string, err error) {
	if !cdataSafe(toUserName) || !cdataSafe(agentID) {
		return nil, "", newError(CodeGenReturnXML, "generate xml: field cannot be put in CDATA", nil)
	}
	enc, err := c.Encrypt(msg, receiveID, random)
	if err != nil {
		return nil, "", err
	}
	const (
		p1 = "<xml><ToUserName><![CDATA["
		p2 = "]]></ToUserName><Encrypt><![CDATA["
		p3 = "]]></Encrypt><AgentID><![CDATA["
		p4 = "]]></AgentID></xml>"
	)
	body = make([]byte, 0, len(p1)+len(toUserName)+len(p2)+len(enc)+len(p3)+len(agentID)+len(p4))
	body = append(body, p1...)
	body = append(body, toUserName...)
	body = append(body, p2...)
	body = append(body, enc...)
	body = append(body, p3...)
	body = append(body, agentID...)
	body = append(body, p4...)
	return body, c.Signature(timestamp, nonce, enc), nil
}

// cdataSafe reports whether s survives a CDATA section unchanged.
func cdataSafe(s string) bool {
	if strings.Contains(s, "]]>") {
		return false
	}
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return false
		}
		// XML 1.0 Char, minus '\r' which parsers turn into '\n'.
		if !(r == '\t' || r == '\n' || 0x20 <= r && r <= 0xD7FF || 0xE000 <= r && r <= 0xFFFD || 0x10000 <= r && r <= 0x10FFFF) {
			return false
		}
		i += size
	}
	return true
}
