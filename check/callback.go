package check

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/pendinglink/pendinglink/crypto"
)

// verifyWithin is how long WeCom waits for the answer to its verification
// request (protocol reference §2.1).
const verifyWithin = time.Second

func fixCallbackSettings(agentID int64) string {
	app := fmt.Sprintf("[AgentId %d]", agentID)
	return fmt.Sprintf("应用管理 → %s → 接收消息 → 设置API接收 / App Management → %s → Receive Messages → Set API Receive: the same URL, Token and EncodingAESKey as serve's WECOM_CALLBACK_TOKEN and WECOM_CALLBACK_AES_KEY", app, app)
}

// checkCallbackURL makes the request WeCom makes when the admin saves the
// callback settings: a GET with an encrypted, signed echostr, whose answer
// must be exactly the decrypted plaintext, within a second.
func checkCallbackURL(ctx context.Context, cfg Config, cr *crypto.Crypt) Line {
	switch {
	case cfg.CallbackURL == "":
		return Line{Skip, LineCallbackURL, "not checked: give --url https://<public host>/wecom/callback to make WeCom's verification request from here", ""}
	case cr == nil:
		return Line{Skip, LineCallbackURL, "not checked: the callback keys are malformed (see callback keys)", ""}
	}
	where := redactURL(cfg.CallbackURL)
	fix := fixCallbackSettings(cfg.WeCom.AgentID)
	u, err := url.Parse(cfg.CallbackURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Line{Fail, LineCallbackURL, "--url must be an absolute http(s) URL", "give the URL WeCom calls, e.g. https://pendinglink.example.com/wecom/callback"}
	}
	echo, err := digits(20)
	if err != nil {
		return Line{Fail, LineCallbackURL, err.Error(), ""}
	}
	// The receive id of a verification is the upstream corp id (§2.1).
	enc, err := cr.Encrypt([]byte(echo), cfg.WeCom.CorpID, rand.Reader)
	if err != nil {
		return Line{Fail, LineCallbackURL, err.Error(), ""}
	}
	nonce, err := digits(10)
	if err != nil {
		return Line{Fail, LineCallbackURL, err.Error(), ""}
	}
	ts := strconv.FormatInt(cfg.Now().Unix(), 10)
	q := u.Query()
	q.Set("msg_signature", cr.Signature(ts, nonce, enc))
	q.Set("timestamp", ts)
	q.Set("nonce", nonce)
	q.Set("echostr", enc)
	u.RawQuery = q.Encode()

	start := cfg.Now()
	status, body, err := get(ctx, cfg.HTTPClient, u.String())
	took := cfg.Now().Sub(start)
	switch {
	case err != nil:
		return Line{Fail, LineCallbackURL, fmt.Sprintf("no answer from %s: %v", where, err),
			"make the URL reachable from the internet over HTTPS (DNS, firewall, the reverse proxy in front of PENDINGLINK_ADDR)"}
	case status == http.StatusUnauthorized:
		return Line{Fail, LineCallbackURL, fmt.Sprintf("%s refused the signature (401): the server there has another WECOM_CALLBACK_TOKEN", where), fix}
	case status == http.StatusBadRequest:
		return Line{Fail, LineCallbackURL, fmt.Sprintf("%s could not decrypt echostr (400): the server there has another WECOM_CALLBACK_AES_KEY", where), fix}
	case status == http.StatusForbidden:
		return Line{Fail, LineCallbackURL, fmt.Sprintf("%s refused receive id %s (403)", where, cfg.WeCom.CorpID),
			"the server there has another WECOM_CORP_ID"}
	case status == http.StatusNotFound:
		return Line{Fail, LineCallbackURL, fmt.Sprintf("%s is not found (404)", where),
			"the path must be PENDINGLINK_CALLBACK_PATH, and the reverse proxy must forward it"}
	case status >= 300 && status < 400:
		return Line{Fail, LineCallbackURL, fmt.Sprintf("%s answers a redirect (%d)", where, status),
			"give WeCom the final URL: it must answer itself"}
	case status != http.StatusOK:
		return Line{Fail, LineCallbackURL, fmt.Sprintf("%s answered HTTP %d", where, status), "see serve's log for the request"}
	case !bytes.Equal(body, []byte(echo)):
		return Line{Fail, LineCallbackURL, fmt.Sprintf("%s answered 200 but not the decrypted echostr: is pendinglink behind it?", where),
			"point the URL (or the reverse proxy) at pendinglink serve"}
	case took > verifyWithin:
		return Line{Fail, LineCallbackURL, fmt.Sprintf("%s answered right but in %s; WeCom waits %s", where, took.Round(time.Millisecond), verifyWithin),
			"serve the URL from nearer, or find what delays it (proxy, TLS, a busy database)"}
	}
	return Line{Pass, LineCallbackURL, fmt.Sprintf("%s answered WeCom's verification with the decrypted echostr in %s", where, took.Round(time.Millisecond)), ""}
}

// get fetches u and reads at most 64 KiB of the answer. Its error never
// holds the URL, whose query carries the signature.
func get(ctx context.Context, client *http.Client, u string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, nil, fmt.Errorf("read answer: %w", err)
	}
	return resp.StatusCode, body, nil
}

// digits returns n random decimal digits, like WeCom's echo plaintexts and
// nonces.
func digits(n int) (string, error) {
	b := make([]byte, n)
	for i := range b {
		d, err := rand.Int(rand.Reader, big.NewInt(10))
		if err != nil {
			return "", fmt.Errorf("random: %w", err)
		}
		b[i] = byte('0' + d.Int64())
	}
	return string(b), nil
}
