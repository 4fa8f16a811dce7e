package wecomtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/pendinglink/pendinglink/crypto"
	"github.com/pendinglink/pendinglink/wecom"
)

// ErrNotDelivered is returned by Sender.Send when no attempt got HTTP 200.
var ErrNotDelivered = errors.New("wecomtest: event not delivered")

// ErrVerifyFailed is returned by Sender.Verify when the URL did not echo
// the plaintext exactly.
var ErrVerifyFailed = errors.New("wecomtest: url verification failed")

// ErrServerClosed is returned by a Sender made by Server.Sender or
// Server.NewSender once the server is closing.
var ErrServerClosed = errors.New("wecomtest: server closed")

// SenderConfig configures a Sender. Only URL, Token and EncodingAESKey are required.
type SenderConfig struct {
	// URL is the callback URL. It may carry its own query parameters; the
	// signature parameters are added to them, and they are not signed (§1.1).
	URL string
	// Token and EncodingAESKey are the callback settings of the app.
	Token          string
	EncodingAESKey string
	// ReceiveID is put at the end of every plaintext (§1.6). Defaults to ""
	// for NewSender and to the upstream CorpID for Server.Sender.
	ReceiveID string
	// AgentID is the outer envelope's <AgentID>. Defaults to "" for
	// NewSender and to the upstream AgentID for Server.Sender.
	AgentID string
	// Clock gives each attempt's timestamp. Defaults to the real time for
	// NewSender and to Server.Clock for Server.Sender.
	Clock *Clock
	// HTTPClient sends the requests. Defaults to a client of the Sender's own.
	HTTPClient *http.Client
	// Timeout is how long an attempt may take before WeCom gives up on it
	// and retries (§2.3). Defaults to 5 s.
	Timeout time.Duration
	// VerifyTimeout is how long the GET handshake may take (§2.1).
	// Defaults to 1 s.
	VerifyTimeout time.Duration
	// MaxAttempts is the number of attempts per event, retries included.
	// WeCom "retries three times in total", which may mean 3 or 1+3 attempts
	// (§9 #6). Defaults to 4, the harsher reading.
	MaxAttempts int
	// RetryInterval is the real time waited between attempts. WeCom's is
	// undocumented. Defaults to 0.
	RetryInterval time.Duration
	// Random is the source of the plaintexts' random prefixes and of nonces.
	// Defaults to crypto/rand.
	Random io.Reader
}

// Sender delivers events the way WeCom does: each attempt marshals the
// event, encrypts it with a fresh random prefix and nonce, signs it with the
// clock's timestamp and POSTs it; a non-200 answer or no answer within
// Timeout is retried. It is safe for concurrent use.
type Sender struct {
	cfg    SenderConfig
	base   *url.URL
	crypt  *crypto.Crypt
	client *http.Client
	own    bool // client was made here, so Server.Close may close its idle connections
	now    func() time.Time
	// track registers one Send with the server that made the Sender; it
	// returns ok=false once that server is closing.
	track func() (done func(), ok bool)
}

// SendResult describes one Send.
type SendResult struct {
	// Attempts is the number of requests made.
	Attempts int
	// Statuses holds each attempt's HTTP status, 0 for no answer (timeout,
	// refused or dropped connection).
	Statuses []int
	// Status is the last attempt's status (200 on success).
	Status int
	// Body is the last answer's body (at most 64 KiB); pendinglink should
	// answer an empty body.
	Body []byte
}

// NewSender returns a Sender that is not tied to any Server. It fails when
// the URL does not parse or the token or key is invalid; the error never
// contains the key.
func NewSender(cfg SenderConfig) (*Sender, error) {
	base, err := url.Parse(cfg.URL)
	if err != nil || base.Scheme == "" || base.Host == "" {
		return nil, fmt.Errorf("wecomtest: sender URL %q: must be an absolute http(s) URL", cfg.URL)
	}
	c, err := crypto.New(cfg.Token, cfg.EncodingAESKey)
	if err != nil {
		return nil, fmt.Errorf("wecomtest: sender: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.VerifyTimeout <= 0 {
		cfg.VerifyTimeout = time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 4
	}
	if cfg.Random == nil {
		cfg.Random = rand.Reader
	}
	sd := &Sender{cfg: cfg, base: base, crypt: c, client: cfg.HTTPClient, now: time.Now}
	if sd.client == nil {
		// Its own transport, so closing its idle connections touches nobody else's.
		sd.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		sd.own = true
	}
	if cfg.Clock != nil {
		sd.now = cfg.Clock.Now
	}
	return sd, nil
}

// NewSender returns a Sender whose unset ReceiveID, AgentID and Clock come
// from the server, and whose Sends Close waits for.
func (s *Server) NewSender(cfg SenderConfig) (*Sender, error) {
	if cfg.ReceiveID == "" {
		cfg.ReceiveID = s.CorpID
	}
	if cfg.AgentID == "" {
		cfg.AgentID = strconv.FormatInt(s.AgentID, 10)
	}
	if cfg.Clock == nil {
		cfg.Clock = s.Clock
	}
	sd, err := NewSender(cfg)
	if err != nil {
		return nil, err
	}
	sd.track = s.trackSend
	s.closeMu.Lock()
	s.senders = append(s.senders, sd)
	s.closeMu.Unlock()
	return sd, nil
}

// Sender is NewSender with the default settings, for the common case. It
// panics if url, token or encodingAESKey is invalid.
func (s *Server) Sender(url, token, encodingAESKey string) *Sender {
	sd, err := s.NewSender(SenderConfig{URL: url, Token: token, EncodingAESKey: encodingAESKey})
	if err != nil {
		panic(err.Error())
	}
	return sd
}

func (s *Server) trackSend() (func(), bool) {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.sendClosed {
		return nil, false
	}
	s.sendWG.Add(1)
	return s.sendWG.Done, true
}

// Send delivers ev, retrying like WeCom. It returns an error wrapping
// ErrNotDelivered when no attempt got HTTP 200, ctx's error when ctx ends
// first, and ErrServerClosed when the Sender's server is closing. The
// result is filled in every case.
func (sd *Sender) Send(ctx context.Context, ev wecom.Event) (SendResult, error) {
	var res SendResult
	if sd.track != nil {
		done, ok := sd.track()
		if !ok {
			return res, ErrServerClosed
		}
		defer done()
	}
	msg, err := ev.Marshal()
	if err != nil {
		return res, fmt.Errorf("wecomtest: send: %w", err)
	}
	var last error
	for attempt := 1; attempt <= sd.cfg.MaxAttempts; attempt++ {
		if attempt > 1 && sd.cfg.RetryInterval > 0 {
			t := time.NewTimer(sd.cfg.RetryInterval)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return res, ctx.Err()
			}
		}
		req, cancel, err := sd.sealedRequest(ctx, msg, ev.ToUserName)
		if err != nil {
			return res, err // not a delivery failure: retrying cannot help
		}
		status, body, err := sd.do(req)
		cancel()
		res.Attempts++
		res.Statuses = append(res.Statuses, status)
		res.Status, res.Body = status, body
		if status == http.StatusOK {
			return res, nil
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		last = err
		if last == nil {
			last = fmt.Errorf("status %d", status)
		}
	}
	return res, fmt.Errorf("%w after %d attempts: %w", ErrNotDelivered, res.Attempts, last)
}

// sealedRequest encrypts and signs msg afresh (new random prefix, nonce and
// timestamp) and returns one attempt's request, bounded by Timeout; the
// caller calls cancel once the answer has been read.
func (sd *Sender) sealedRequest(ctx context.Context, msg []byte, toUserName string) (_ *http.Request, cancel func(), _ error) {
	ts := strconv.FormatInt(sd.now().Unix(), 10)
	nonce, err := sd.nonce()
	if err != nil {
		return nil, nil, err
	}
	body, sig, err := sd.crypt.Seal(msg, sd.cfg.ReceiveID, toUserName, sd.cfg.AgentID, ts, nonce, sd.cfg.Random)
	if err != nil {
		return nil, nil, fmt.Errorf("wecomtest: send: %w", err)
	}
	ctx, cancel = context.WithTimeout(ctx, sd.cfg.Timeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sd.signedURL(sig, ts, nonce, ""), bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("wecomtest: send: %w", err)
	}
	req.Header.Set("Content-Type", "text/xml")
	return req, cancel, nil
}

// Verify performs the GET URL verification WeCom makes when an admin saves
// the callback settings (§2.1): a random digit string is encrypted as
// echostr, and the answer must be HTTP 200 with exactly that string as its
// body. Otherwise Verify returns an error wrapping ErrVerifyFailed. There is
// no retry: WeCom shows the admin an error instead.
func (sd *Sender) Verify(ctx context.Context) error {
	if sd.track != nil {
		done, ok := sd.track()
		if !ok {
			return ErrServerClosed
		}
		defer done()
	}
	// A long digit string, like the official samples' echo plaintext.
	e1, err := sd.nonce()
	if err != nil {
		return err
	}
	e2, err := sd.nonce()
	if err != nil {
		return err
	}
	echo := e1 + e2
	enc, err := sd.crypt.Encrypt([]byte(echo), sd.cfg.ReceiveID, sd.cfg.Random)
	if err != nil {
		return fmt.Errorf("wecomtest: verify: %w", err)
	}
	ts := strconv.FormatInt(sd.now().Unix(), 10)
	nonce, err := sd.nonce()
	if err != nil {
		return err
	}
	u := sd.signedURL(sd.crypt.Signature(ts, nonce, enc), ts, nonce, enc)
	ctx, cancel := context.WithTimeout(ctx, sd.cfg.VerifyTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("wecomtest: verify: %w", err)
	}
	status, body, err := sd.do(req)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", ErrVerifyFailed, err)
	case status != http.StatusOK:
		return fmt.Errorf("%w: status %d", ErrVerifyFailed, status)
	case !bytes.Equal(body, []byte(echo)):
		return fmt.Errorf("%w: body %q, want %q", ErrVerifyFailed, truncate(body, 80), echo)
	}
	return nil
}

func (sd *Sender) do(req *http.Request) (int, []byte, error) {
	resp, err := sd.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		// WeCom needs the whole answer in time; a body cut short is no answer.
		return 0, nil, err
	}
	return resp.StatusCode, body, nil
}

// signedURL adds the signature parameters (and echostr for GET) to the
// callback URL's own query.
func (sd *Sender) signedURL(sig, ts, nonce, echostr string) string {
	u := *sd.base
	q := u.Query()
	q.Set("msg_signature", sig)
	q.Set("timestamp", ts)
	q.Set("nonce", nonce)
	if echostr != "" {
		q.Set("echostr", echostr)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// nonce returns a random decimal string, like WeCom's nonces.
func (sd *Sender) nonce() (string, error) {
	var b [8]byte
	if _, err := io.ReadFull(sd.cfg.Random, b[:]); err != nil {
		return "", fmt.Errorf("wecomtest: random source: %w", err)
	}
	return strconv.FormatUint(binary.BigEndian.Uint64(b[:])%10_000_000_000, 10), nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
