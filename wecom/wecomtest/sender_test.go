package wecomtest_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// The callback settings of Vector C (protocol reference §8).
const (
	cbToken = "QDG6eK"
	cbKey   = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
)

// delivery is one request the receiver got, opened without our crypto
// package, so that a bug shared by crypto's Seal and Decrypt cannot hide.
type delivery struct {
	method    string
	query     url.Values
	path      string
	header    http.Header
	envelope  struct{ ToUserName, Encrypt, AgentID string }
	msg       []byte
	receiveID string
	err       error // why the request was not authentic, if it wasn't
}

// receiver is a stand-in for pendinglink's callback URL. answer decides each
// attempt's reply (attempt counts from 1); nil answers 200 with no body.
type receiver struct {
	*httptest.Server
	mu         sync.Mutex
	deliveries []delivery
	answer     func(attempt int, w http.ResponseWriter, r *http.Request, d delivery)
}

func newReceiver(t *testing.T, answer func(attempt int, w http.ResponseWriter, r *http.Request, d delivery)) *receiver {
	t.Helper()
	rc := &receiver{answer: answer}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		d := delivery{method: r.Method, query: r.URL.Query(), path: r.URL.Path, header: r.Header.Clone()}
		if r.Method == http.MethodGet {
			d.msg, d.receiveID, d.err = open(d.query, d.query.Get("echostr"))
		} else if d.err = xml.Unmarshal(body, &d.envelope); d.err == nil {
			d.msg, d.receiveID, d.err = open(d.query, d.envelope.Encrypt)
		}
		rc.mu.Lock()
		rc.deliveries = append(rc.deliveries, d)
		n := len(rc.deliveries)
		rc.mu.Unlock()
		if rc.answer != nil {
			rc.answer(n, w, r, d)
		}
	}))
	t.Cleanup(rc.Close)
	return rc
}

// newReceiverB starts a callback URL that answers 200 without checking, for benchmarks.
func newReceiverB(b *testing.B) string {
	b.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	b.Cleanup(srv.Close)
	return srv.URL
}

func (rc *receiver) got() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.deliveries...)
}

// open checks the signature over exactly token, timestamp, nonce and the
// encrypted text (§1.1), then decrypts with AES-256-CBC and 32-byte PKCS#7
// (§1.2–§1.4), written out here from the reference.
func open(q url.Values, encrypted string) (msg []byte, receiveID string, err error) {
	parts := []string{cbToken, q.Get("timestamp"), q.Get("nonce"), encrypted}
	sort.Strings(parts)
	sum := sha1.Sum([]byte(strings.Join(parts, "")))
	if hex.EncodeToString(sum[:]) != q.Get("msg_signature") {
		return nil, "", errors.New("bad signature")
	}
	key, err := base64.StdEncoding.DecodeString(cbKey + "=")
	if err != nil {
		return nil, "", err
	}
	ct, err := base64.StdEncoding.DecodeString(encrypted)
	if err != nil {
		return nil, "", err
	}
	if len(ct) == 0 || len(ct)%32 != 0 {
		return nil, "", fmt.Errorf("ciphertext length %d is not a multiple of 32", len(ct))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, "", err
	}
	p := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, key[:16]).CryptBlocks(p, ct)
	pad := int(p[len(p)-1])
	if pad < 1 || pad > 32 {
		return nil, "", fmt.Errorf("pad %d", pad)
	}
	for _, c := range p[len(p)-pad:] {
		if int(c) != pad {
			return nil, "", errors.New("bad padding")
		}
	}
	p = p[:len(p)-pad]
	n := int(binary.BigEndian.Uint32(p[16:20]))
	if 20+n > len(p) {
		return nil, "", errors.New("msg_len too long")
	}
	return p[20 : 20+n], string(p[20+n:]), nil
}

// answerStatuses answers attempt i with statuses[i-1], then 200.
func answerStatuses(statuses ...int) func(int, http.ResponseWriter, *http.Request, delivery) {
	return func(attempt int, w http.ResponseWriter, _ *http.Request, _ delivery) {
		if attempt <= len(statuses) {
			w.WriteHeader(statuses[attempt-1])
		}
	}
}

// addEvent builds a world with one customer and returns its add event.
func addEvent(b testBundle) (wecomtest.Dealer, wecom.Event) {
	d := b.srv.AddDealer("Dealer A")
	c := b.srv.AddCustomer(d, b.srv.AddPerson(), d.Staff[0])
	return d, b.srv.ContactEvent(c, wecom.ChangeAddExternalContact)
}

// sendSetup is the start of most Send tests: a world with one add event and
// a receiver that answers with answer.
func sendSetup(t *testing.T, answer func(int, http.ResponseWriter, *http.Request, delivery)) (testBundle, wecom.Event, *receiver) {
	t.Helper()
	b := setup(t)
	_, ev := addEvent(b)
	return b, ev, newReceiver(t, answer)
}

func TestSender_Send(t *testing.T) {
	t.Parallel()

	// Ensure one attempt carries what WeCom sends: a signed query, the
	// envelope with the dealer as ToUserName, and the event encrypted for
	// the upstream corp.
	t.Run("DeliversWhatWeComWouldSend", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.clock.Advance(7 * time.Second)
		d, ev := addEvent(b)
		rc := newReceiver(t, nil)

		res, err := b.srv.Sender(rc.URL+"/wecom/callback", cbToken, cbKey).Send(context.Background(), ev)
		require.NoError(t, err)
		require.Equal(t, 1, res.Attempts)
		require.Equal(t, []int{200}, res.Statuses)
		require.Equal(t, 200, res.Status)
		require.Empty(t, res.Body)

		got := rc.got()
		require.Len(t, got, 1)
		dl := got[0]
		require.NoError(t, dl.err)
		require.Equal(t, http.MethodPost, dl.method)
		require.Equal(t, "/wecom/callback", dl.path)
		require.Equal(t, strconv.FormatInt(t0.Add(7*time.Second).Unix(), 10), dl.query.Get("timestamp"))
		require.Regexp(t, `^[0-9]+$`, dl.query.Get("nonce"))
		require.Len(t, dl.query, 3, "msg_signature, timestamp, nonce")
		require.Equal(t, d.CorpID, dl.envelope.ToUserName)
		require.Equal(t, "1000002", dl.envelope.AgentID)
		require.Equal(t, b.srv.CorpID, dl.receiveID)
		want, err := ev.Marshal()
		require.NoError(t, err)
		require.Equal(t, string(want), string(dl.msg))
	})

	t.Run("BodyIsReturned", func(t *testing.T) {
		t.Parallel()
		b, ev, rc := sendSetup(t, func(_ int, w http.ResponseWriter, _ *http.Request, _ delivery) {
			_, _ = io.WriteString(w, "success")
		})
		res, err := b.srv.Sender(rc.URL, cbToken, cbKey).Send(context.Background(), ev)
		require.NoError(t, err)
		require.Equal(t, "success", string(res.Body))
	})

	// Ensure every retry is a fresh encryption (new nonce, new random
	// prefix) of the same event, as WeCom may do (§9 #7).
	t.Run("RetriesNon200WithFreshCiphertext", func(t *testing.T) {
		t.Parallel()
		b, ev, rc := sendSetup(t, answerStatuses(503, 500))

		res, err := b.srv.Sender(rc.URL, cbToken, cbKey).Send(context.Background(), ev)
		require.NoError(t, err)
		require.Equal(t, 3, res.Attempts)
		require.Equal(t, []int{503, 500, 200}, res.Statuses)
		got := rc.got()
		require.Len(t, got, 3)
		nonces, encs := map[string]bool{}, map[string]bool{}
		for _, dl := range got {
			require.NoError(t, dl.err)
			require.Equal(t, string(got[0].msg), string(dl.msg))
			nonces[dl.query.Get("nonce")] = true
			encs[dl.envelope.Encrypt] = true
		}
		require.Len(t, nonces, 3)
		require.Len(t, encs, 3)
	})

	t.Run("GivesUpAfter1Plus3Attempts", func(t *testing.T) {
		t.Parallel()
		b, ev, rc := sendSetup(t, answerStatuses(500, 500, 500, 500, 500))

		res, err := b.srv.Sender(rc.URL, cbToken, cbKey).Send(context.Background(), ev)
		require.ErrorIs(t, err, wecomtest.ErrNotDelivered)
		require.Contains(t, err.Error(), "after 4 attempts: status 500")
		require.Equal(t, 4, res.Attempts)
		require.Equal(t, []int{500, 500, 500, 500}, res.Statuses)
		require.Len(t, rc.got(), 4)
	})

	t.Run("MaxAttemptsConfigurable", func(t *testing.T) {
		t.Parallel()
		b, ev, rc := sendSetup(t, answerStatuses(500, 500, 500, 500))
		sd, err := b.srv.NewSender(wecomtest.SenderConfig{URL: rc.URL, Token: cbToken, EncodingAESKey: cbKey, MaxAttempts: 3})
		require.NoError(t, err)
		res, err := sd.Send(context.Background(), ev)
		require.ErrorIs(t, err, wecomtest.ErrNotDelivered)
		require.Equal(t, 3, res.Attempts)
	})

	t.Run("RetriesWhenNoAnswerWithinTimeout", func(t *testing.T) {
		t.Parallel()
		b, ev, rc := sendSetup(t, func(attempt int, w http.ResponseWriter, r *http.Request, _ delivery) {
			if attempt == 1 {
				<-r.Context().Done() // hold the answer until the sender gives up
			}
		})
		sd, err := b.srv.NewSender(wecomtest.SenderConfig{URL: rc.URL, Token: cbToken, EncodingAESKey: cbKey, Timeout: 50 * time.Millisecond})
		require.NoError(t, err)
		res, err := sd.Send(context.Background(), ev)
		require.NoError(t, err)
		require.Equal(t, []int{0, 200}, res.Statuses)
	})

	t.Run("RetriesWhenConnectionDropped", func(t *testing.T) {
		t.Parallel()
		b, ev, rc := sendSetup(t, func(attempt int, w http.ResponseWriter, _ *http.Request, _ delivery) {
			if attempt == 1 {
				panic(http.ErrAbortHandler)
			}
		})
		res, err := b.srv.Sender(rc.URL, cbToken, cbKey).Send(context.Background(), ev)
		require.NoError(t, err)
		require.Equal(t, []int{0, 200}, res.Statuses)
	})

	t.Run("RetriesWhenNobodyListens", func(t *testing.T) {
		t.Parallel()
		b, ev, rc := sendSetup(t, nil)
		dead := rc.URL
		rc.Close()
		res, err := b.srv.Sender(dead, cbToken, cbKey).Send(context.Background(), ev)
		require.ErrorIs(t, err, wecomtest.ErrNotDelivered)
		require.Equal(t, []int{0, 0, 0, 0}, res.Statuses)
	})

	// Ensure the URL's own query survives and is not signed (§1.1, §7 #2).
	t.Run("KeepsTheURLsOwnQueryUnsigned", func(t *testing.T) {
		t.Parallel()
		b, ev, rc := sendSetup(t, nil)
		_, err := b.srv.Sender(rc.URL+"/cb?tenant=brand&x=1", cbToken, cbKey).Send(context.Background(), ev)
		require.NoError(t, err)
		dl := rc.got()[0]
		require.NoError(t, dl.err, "signed over the four values only")
		require.Equal(t, "brand", dl.query.Get("tenant"))
		require.Equal(t, "1", dl.query.Get("x"))
	})

	t.Run("TimestampFollowsTheClock", func(t *testing.T) {
		t.Parallel()
		b, ev, rc := sendSetup(t, nil)
		sd := b.srv.Sender(rc.URL, cbToken, cbKey)
		_, err := sd.Send(context.Background(), ev)
		require.NoError(t, err)
		b.clock.Advance(time.Hour)
		_, err = sd.Send(context.Background(), ev)
		require.NoError(t, err)
		got := rc.got()
		require.Equal(t, strconv.FormatInt(t0.Unix(), 10), got[0].query.Get("timestamp"))
		require.Equal(t, strconv.FormatInt(t0.Add(time.Hour).Unix(), 10), got[1].query.Get("timestamp"))
	})

	t.Run("CtxCancelStopsRetrying", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, ev := addEvent(b)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request, _ delivery) {
			cancel()
			w.WriteHeader(500)
		})
		sd, err := b.srv.NewSender(wecomtest.SenderConfig{URL: rc.URL, Token: cbToken, EncodingAESKey: cbKey, RetryInterval: time.Hour})
		require.NoError(t, err)
		_, err = sd.Send(ctx, ev)
		require.ErrorIs(t, err, context.Canceled)
		require.Len(t, rc.got(), 1)
	})

	t.Run("ErrServerClosedAfterClose", func(t *testing.T) {
		t.Parallel()
		b, ev, rc := sendSetup(t, nil)
		sd := b.srv.Sender(rc.URL, cbToken, cbKey)
		b.srv.Close()
		_, err := sd.Send(context.Background(), ev)
		require.ErrorIs(t, err, wecomtest.ErrServerClosed)
		require.ErrorIs(t, sd.Verify(context.Background()), wecomtest.ErrServerClosed)
		require.Empty(t, rc.got())
	})

	// Ensure Close waits for a Send in progress: the receiver holds the
	// first answer, and Close must not return before it has been given.
	t.Run("CloseWaitsForSendInProgress", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, ev := addEvent(b)
		entered, release := make(chan struct{}), make(chan struct{})
		var releaseOnce sync.Once
		unblock := func() { releaseOnce.Do(func() { close(release) }) }
		var answered atomic.Bool
		rc := newReceiver(t, func(attempt int, w http.ResponseWriter, _ *http.Request, _ delivery) {
			if attempt == 1 {
				close(entered)
				<-release
				answered.Store(true)
				w.WriteHeader(503)
			}
		})
		t.Cleanup(unblock) // runs before the receiver's Close: on failure, free its handler
		sd := b.srv.Sender(rc.URL, cbToken, cbKey)
		sent := make(chan sendOutcome, 1)
		go func() {
			res, err := sd.Send(context.Background(), ev)
			sent <- sendOutcome{res, err}
		}()
		<-entered
		closed := make(chan struct{})
		go func() {
			b.srv.Close()
			close(closed)
		}()
		select {
		case <-closed:
			t.Fatal("Close returned while a Send was in progress")
		case <-time.After(50 * time.Millisecond): // a negative check only; passing never depends on it
		}
		unblock()
		<-closed
		require.True(t, answered.Load())
		out := <-sent
		require.NoError(t, out.err, "retries continue until done")
		require.Equal(t, []int{503, 200}, out.res.Statuses)
	})

	t.Run("ErrUnsealableEventIsNotRetried", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rc := newReceiver(t, nil)
		res, err := b.srv.Sender(rc.URL, cbToken, cbKey).Send(context.Background(), wecom.Event{ToUserName: "a]]>b"})
		require.Error(t, err)
		require.NotErrorIs(t, err, wecomtest.ErrNotDelivered)
		require.Zero(t, res.Attempts)
		require.Empty(t, rc.got())
	})

	t.Run("StandaloneSenderHasNoServer", func(t *testing.T) {
		t.Parallel()
		clock := wecomtest.NewClock(t0)
		rc := newReceiver(t, nil)
		sd, err := wecomtest.NewSender(wecomtest.SenderConfig{
			URL: rc.URL, Token: cbToken, EncodingAESKey: cbKey, ReceiveID: "wwtestself", AgentID: "7", Clock: clock,
		})
		require.NoError(t, err)
		ev := wecom.Event{ToUserName: "wwtestself", FromUserName: "sys", MsgType: "event", Event: "unknown_event"}
		_, err = sd.Send(context.Background(), ev)
		require.NoError(t, err)
		dl := rc.got()[0]
		require.NoError(t, dl.err)
		require.Equal(t, "wwtestself", dl.receiveID)
		require.Equal(t, "7", dl.envelope.AgentID)
		require.Equal(t, strconv.FormatInt(t0.Unix(), 10), dl.query.Get("timestamp"))
	})

	t.Run("DeterministicWithFixedRandom", func(t *testing.T) {
		t.Parallel()
		rc := newReceiver(t, nil)
		newSender := func() *wecomtest.Sender {
			sd, err := wecomtest.NewSender(wecomtest.SenderConfig{
				URL: rc.URL, Token: cbToken, EncodingAESKey: cbKey, Clock: wecomtest.NewClock(t0),
				Random: strings.NewReader(strings.Repeat("0123456789abcdef", 4)),
			})
			require.NoError(t, err)
			return sd
		}
		ev := wecom.Event{ToUserName: "wwtestself", MsgType: "event"}
		_, err := newSender().Send(context.Background(), ev)
		require.NoError(t, err)
		_, err = newSender().Send(context.Background(), ev)
		require.NoError(t, err)
		got := rc.got()
		require.Equal(t, got[0].query, got[1].query)
		require.Equal(t, got[0].envelope, got[1].envelope)
	})
}

// sendOutcome carries a Send's results across a goroutine.
type sendOutcome struct {
	res wecomtest.SendResult
	err error
}

func TestNewSender(t *testing.T) {
	t.Parallel()

	t.Run("ErrInvalidKeyWithoutTheKey", func(t *testing.T) {
		t.Parallel()
		bad := "short-key-that-must-not-leak"
		_, err := wecomtest.NewSender(wecomtest.SenderConfig{URL: "http://127.0.0.1:1/", Token: cbToken, EncodingAESKey: bad})
		require.Error(t, err)
		require.NotContains(t, err.Error(), bad)
	})

	t.Run("ErrRelativeURL", func(t *testing.T) {
		t.Parallel()
		_, err := wecomtest.NewSender(wecomtest.SenderConfig{URL: "/callback", Token: cbToken, EncodingAESKey: cbKey})
		require.ErrorContains(t, err, "absolute")
	})

	t.Run("ServerSenderPanicsOnMisuse", func(t *testing.T) {
		t.Parallel()
		srv := wecomtest.NewUnstartedServer()
		require.Panics(t, func() { srv.Sender("http://127.0.0.1:1/", cbToken, "nope") })
	})
}

func TestSender_Verify(t *testing.T) {
	t.Parallel()

	echoWith := func(f func(msg []byte) []byte) func(int, http.ResponseWriter, *http.Request, delivery) {
		return func(_ int, w http.ResponseWriter, _ *http.Request, d delivery) {
			if d.err != nil {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write(f(d.msg))
		}
	}

	t.Run("OKWhenTheExactPlaintextIsEchoed", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rc := newReceiver(t, echoWith(func(m []byte) []byte { return m }))
		require.NoError(t, b.srv.Sender(rc.URL+"/cb?x=1", cbToken, cbKey).Verify(context.Background()))
		got := rc.got()
		require.Len(t, got, 1)
		dl := got[0]
		require.Equal(t, http.MethodGet, dl.method)
		require.NoError(t, dl.err)
		require.Regexp(t, `^[0-9]+$`, string(dl.msg))
		require.Equal(t, b.srv.CorpID, dl.receiveID)
		require.Equal(t, "1", dl.query.Get("x"))
		require.Equal(t, strconv.FormatInt(t0.Unix(), 10), dl.query.Get("timestamp"))
	})

	t.Run("EchoDiffersEachTime", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rc := newReceiver(t, echoWith(func(m []byte) []byte { return m }))
		sd := b.srv.Sender(rc.URL, cbToken, cbKey)
		require.NoError(t, sd.Verify(context.Background()))
		require.NoError(t, sd.Verify(context.Background()))
		got := rc.got()
		require.NotEqual(t, string(got[0].msg), string(got[1].msg))
	})

	for name, f := range map[string]func([]byte) []byte{
		"ErrTrailingNewline": func(m []byte) []byte { return append(m, '\n') },
		"ErrQuoted":          func(m []byte) []byte { return []byte(strconv.Quote(string(m))) },
		"ErrBOM":             func(m []byte) []byte { return append([]byte("\ufeff"), m...) },
		"ErrEmpty":           func([]byte) []byte { return nil },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			rc := newReceiver(t, echoWith(f))
			err := b.srv.Sender(rc.URL, cbToken, cbKey).Verify(context.Background())
			require.ErrorIs(t, err, wecomtest.ErrVerifyFailed)
			require.Len(t, rc.got(), 1, "no retry")
		})
	}

	t.Run("ErrStatus", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rc := newReceiver(t, answerStatuses(http.StatusInternalServerError))
		err := b.srv.Sender(rc.URL, cbToken, cbKey).Verify(context.Background())
		require.ErrorIs(t, err, wecomtest.ErrVerifyFailed)
		require.ErrorContains(t, err, "status 500")
	})

	t.Run("ErrNoAnswerWithinVerifyTimeout", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		rc := newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request, _ delivery) { <-r.Context().Done() })
		sd, err := b.srv.NewSender(wecomtest.SenderConfig{URL: rc.URL, Token: cbToken, EncodingAESKey: cbKey, VerifyTimeout: 50 * time.Millisecond})
		require.NoError(t, err)
		err = sd.Verify(context.Background())
		require.ErrorIs(t, err, wecomtest.ErrVerifyFailed)
		require.ErrorIs(t, err, context.DeadlineExceeded)
	})
}
