package handlers

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/pendinglink/pendinglink/crypto"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
)

// callbackHandler serves the callback URL. Every rejection writes nothing,
// is counted by reason and logged at warn; every authentic event is answered
// 200 (even ones we do not understand), and only a store failure gets a 5xx,
// the one case where WeCom's retry helps.
type callbackHandler struct {
	cfg     Config
	metrics *metrics
	// slots holds one token per callback being read and authenticated.
	slots chan struct{}
	// receiveIDs reloads the allow-list when an unknown receive id or a
	// share change arrives; nil without Config.RefreshReceiveIDs.
	receiveIDs *refresher
}

// callbackReadTimeout is how long a callback body may take to arrive.
const callbackReadTimeout = 5 * time.Second

// signedQuery holds the query values that, with the encrypted text, are signed.
type signedQuery struct {
	signature, timestamp, nonce string
}

func readSignedQuery(c echo.Context) signedQuery {
	q := c.Request().URL.Query()
	return signedQuery{signature: q.Get("msg_signature"), timestamp: q.Get("timestamp"), nonce: q.Get("nonce")}
}

// reject counts and logs a rejected callback and returns the HTTP error.
// Only public request facts are logged: never the key, token or plaintext.
func (h *callbackHandler) reject(c echo.Context, status int, reason string, err error) error {
	h.metrics.rejected.WithLabelValues(reason).Inc()
	h.cfg.Logger.Warn("callback rejected",
		"reason", reason, "status", status, "method", c.Request().Method,
		"remote", c.RealIP(), "err", err)
	return echo.NewHTTPError(status, "callback rejected: "+reason)
}

// authenticate checks the signature over encrypted and the replay window, then
// decrypts and applies the receive-id policy.
func (h *callbackHandler) authenticate(c echo.Context, q signedQuery, encrypted string) (msg, receiveID []byte, err error) {
	if q.signature == "" || q.timestamp == "" || q.nonce == "" {
		return nil, nil, h.reject(c, http.StatusUnauthorized, ReasonSignature, errors.New("missing msg_signature, timestamp or nonce"))
	}
	if err := h.cfg.Crypt.VerifySignature(q.signature, q.timestamp, q.nonce, encrypted); err != nil {
		return nil, nil, h.reject(c, http.StatusUnauthorized, ReasonSignature, err)
	}
	if h.cfg.MaxAge > 0 {
		ts, perr := strconv.ParseInt(q.timestamp, 10, 64)
		age := h.cfg.Now().Sub(time.Unix(ts, 0))
		if perr != nil || age > h.cfg.MaxAge || age < -h.cfg.MaxAge {
			return nil, nil, h.reject(c, http.StatusUnauthorized, ReasonStale, errors.New("timestamp outside the replay window"))
		}
	}
	msg, receiveID, err = h.cfg.Crypt.Decrypt(encrypted)
	if err != nil {
		return nil, nil, h.reject(c, http.StatusBadRequest, ReasonDecrypt, err)
	}
	if !h.cfg.ReceiveIDs.Accepts(receiveID) {
		// A dealer that joined since the last refresh is not on the list
		// yet: ask WeCom now (rate-limited) rather than refuse an authentic
		// event, which WeCom retries only briefly.
		ctx, cancel := context.WithTimeout(c.Request().Context(), refreshTimeout)
		refreshed := h.receiveIDs.refreshNow(ctx, "unknown receive id")
		cancel()
		if refreshed && h.cfg.ReceiveIDs.Accepts(receiveID) {
			return msg, receiveID, nil
		}
		return nil, nil, h.reject(c, http.StatusForbidden, ReasonReceiveID,
			errors.New("receive id "+strconv.Quote(string(receiveID))+" not allowed by mode "+h.cfg.ReceiveIDs.Mode()))
	}
	return msg, receiveID, nil
}

// verifyURL answers WeCom's URL-verification handshake with exactly the
// decrypted echo string: text/plain, no quotes, no newline.
func (h *callbackHandler) verifyURL(c echo.Context) error {
	// Query().Get already URL-decodes echostr once; decoding again would turn
	// '+' into ' ' and break the signature (protocol reference §2.1).
	echostr := c.Request().URL.Query().Get("echostr")
	msg, receiveID, err := h.authenticate(c, readSignedQuery(c), echostr)
	if err != nil {
		return err
	}
	h.cfg.Logger.Info("callback URL verified", "receive_id", string(receiveID))
	return c.Blob(http.StatusOK, echo.MIMETextPlain, msg)
}

// receive handles one event delivery.
func (h *callbackHandler) receive(c echo.Context) error {
	start := time.Now()
	defer func() { h.metrics.ackSeconds.Observe(time.Since(start).Seconds()) }()

	if c.Request().ContentLength > h.cfg.BodyLimit {
		return h.reject(c, http.StatusRequestEntityTooLarge, ReasonTooLarge, errors.New("Content-Length over the body limit"))
	}
	// Until the signature is checked anyone can send; bound how many bodies
	// are held at once, and free the slot once the sender is authenticated.
	select {
	case h.slots <- struct{}{}:
	default:
		c.Response().Header().Set("Retry-After", "1")
		return h.reject(c, http.StatusServiceUnavailable, ReasonBusy, errors.New("too many callbacks being read"))
	}
	release := sync.OnceFunc(func() { <-h.slots })
	defer release()
	// WeCom gives up on an answer after 5 s, so a body slower than that is
	// not WeCom's and would only keep the slot from it. (Unsupported by
	// test recorders; the server's own ReadTimeout still applies.)
	_ = http.NewResponseController(c.Response()).SetReadDeadline(time.Now().Add(callbackReadTimeout))

	q := readSignedQuery(c)
	env, err := h.readEnvelope(c, q)
	if err != nil {
		return err
	}
	msg, receiveID, err := h.authenticate(c, q, env.Encrypt)
	release()
	if err != nil {
		return err
	}

	ev := toStoreEvent(msg, receiveID)
	if ev.Kind == wecom.KindIgnored {
		h.cfg.Logger.Info("authentic event ignored", "event", ev.Event, "change_type", ev.ChangeType, "reason", ev.Reason)
	}
	inserted, err := h.cfg.Store.SaveEvent(c.Request().Context(), ev)
	if err != nil {
		h.metrics.storeFail.Inc()
		h.cfg.Logger.Error("store callback event", "kind", ev.Kind, "err", err)
		// 503 is the one answer that makes WeCom retry; nothing was acknowledged.
		return echo.NewHTTPError(http.StatusServiceUnavailable, "event not stored, retry")
	}
	if inserted {
		h.metrics.accepted.WithLabelValues(ev.Kind).Inc()
		if isShareChange(ev.Event) {
			h.receiveIDs.refreshLater("app share changed")
		}
	} else {
		h.metrics.duplicates.Inc()
	}
	if h.cfg.Logger.Enabled(c.Request().Context(), slog.LevelDebug) { // skip building attrs on the hot path
		h.cfg.Logger.Debug("callback accepted", "receive_id", string(receiveID),
			"outer_to_user_name", env.ToUserName, "to_user_name", ev.CorpID,
			"kind", ev.Kind, "event_id", ev.ID, "duplicate", !inserted)
	}
	return c.NoContent(http.StatusOK)
}

// readEnvelope parses the POST body as it arrives, within the body limit.
func (h *callbackHandler) readEnvelope(c echo.Context, q signedQuery) (crypto.Envelope, error) {
	body := http.MaxBytesReader(c.Response(), c.Request().Body, h.cfg.BodyLimit)
	env, err := crypto.DecodeEnvelope(body)
	if err == nil {
		// Whatever follows </xml> is ignored, but still counts toward the limit.
		_, err = io.Copy(io.Discard, body)
	}
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return env, nil
	case errors.As(err, &tooLarge):
		return env, h.reject(c, http.StatusRequestEntityTooLarge, ReasonTooLarge, err)
	case q.signature == "":
		// A missing signature is the stronger signal of a non-WeCom caller.
		return env, h.reject(c, http.StatusUnauthorized, ReasonSignature, errors.New("missing msg_signature"))
	}
	return env, h.reject(c, http.StatusBadRequest, ReasonDecrypt, err)
}

// toStoreEvent converts a decrypted message at the boundary. Unparsable XML
// and unknown kinds become "ignored" events that keep the raw plaintext.
func toStoreEvent(msg, receiveID []byte) *store.Event {
	raw := make([]byte, len(msg)) // msg aliases the decrypt buffer
	copy(raw, msg)
	ev := &store.Event{Raw: raw, ReceiveID: string(receiveID)}
	we, err := wecom.ParseEvent(raw)
	if err != nil {
		ev.Kind = wecom.KindIgnored
		ev.Reason = "unparsable event XML"
		ev.DedupKey = wecom.Event{}.DedupKey(raw)
		return ev
	}
	ev.Kind = we.Kind()
	ev.DedupKey = we.DedupKey(raw)
	ev.CorpID = we.ToUserName
	ev.Event, ev.ChangeType = we.Event, we.ChangeType
	ev.UserID, ev.ExternalUserID, ev.ChatID, ev.Source = we.UserID, we.ExternalUserID, we.ChatID, we.Source
	if we.CreateTime > 0 {
		ev.CreateTime = time.Unix(we.CreateTime, 0).UTC()
	}
	if ev.Kind == wecom.KindIgnored {
		ev.Reason = "unhandled " + strings.Trim(we.Event+"/"+we.ChangeType+"/"+we.UpdateDetail, "/")
	} else if len(we.MemChangeList) > 0 {
		ev.Members = we.MemChangeList
	}
	return ev
}
