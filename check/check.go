// Package check tests a pendinglink deployment against WeCom, its database,
// its public callback URL and its webhook, and reports a checklist: the
// logic of `pendinglink check`. Every failed line says where to fix it, in
// the WeCom admin console's own words (Chinese, then English).
package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pendinglink/pendinglink/crypto"
	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
)

// Mark is a line's verdict.
type Mark string

// The three verdicts. Skip is an optional item left out (no --url, no
// webhook) or one that cannot be checked until a failure above is fixed.
const (
	Pass Mark = "✓"
	Fail Mark = "✗"
	Skip Mark = "–"
)

// Names of the lines, in the order Run reports them. README.md documents
// each.
const (
	LineCallbackKeys = "callback keys"
	LineSecret       = "corp id and secret"
	LineSharedApp    = "shared app"
	LineTrustedIP    = "trusted IP"
	LinePendingID    = "pending_id permission"
	LineDatabase     = "database"
	LineQuota        = "quota"
	LineCallbackURL  = "callback URL"
	LineWebhook      = "webhook"
)

// Line is one item of the checklist.
type Line struct {
	Mark Mark
	Name string
	// Text says what was found. It never holds a secret.
	Text string
	// Fix, on a failed line, says where to fix it.
	Fix string
}

// String is the line as printed: always one line, even when an error in
// Text spans several (pgx lists each address it tried).
func (l Line) String() string {
	s := string(l.Mark) + " " + l.Name + ": " + oneLine(l.Text)
	if l.Fix != "" {
		s += ". Fix: " + oneLine(l.Fix)
	}
	return s
}

func oneLine(s string) string {
	parts := strings.Split(s, "\n")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return strings.Join(parts, "; ")
}

// Report is the checklist, in order.
type Report []Line

// Failed counts the failed lines.
func (r Report) Failed() int {
	n := 0
	for _, l := range r {
		if l.Mark == Fail {
			n++
		}
	}
	return n
}

// Line returns the line called name, and whether there is one.
func (r Report) Line(name string) (Line, bool) {
	for _, l := range r {
		if l.Name == name {
			return l, true
		}
	}
	return Line{}, false
}

// Print writes one line per item, then a summary.
func (r Report) Print(w io.Writer) error {
	var b strings.Builder
	count := map[Mark]int{}
	for _, l := range r {
		b.WriteString(l.String() + "\n")
		count[l.Mark]++
	}
	verdict := "everything needed works"
	if count[Fail] > 0 {
		verdict = "fix the ✗ lines and run check again"
	}
	fmt.Fprintf(&b, "%d passed, %d failed, %d skipped: %s.\n", count[Pass], count[Fail], count[Skip], verdict)
	_, err := io.WriteString(w, b.String())
	return err
}

// Config is what the checks need: serve's configuration, and what to test
// beyond it.
type Config struct {
	// WeCom configures the client, as serve's. Its Logger is ignored: the
	// report says what went wrong.
	WeCom wecom.Config
	// CallbackToken and CallbackAESKey are the callback settings.
	CallbackToken, CallbackAESKey string
	// DB is the database DSN (PENDINGLINK_DB). It is only read.
	DB string
	// Quotas are the limiters serve keeps; Run reads their counters from
	// DB and ignores their Store.
	Quotas []quota.Config
	// CallbackURL, if set, is the public callback URL to send WeCom's
	// verification request to.
	CallbackURL string
	// Webhook, if set, gets one signed test delivery.
	Webhook *pipeline.Webhook
	// HTTPClient sends the callback URL's verification request. Defaults
	// to a client with a 5 s timeout that does not follow redirects.
	HTTPClient *http.Client
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

// Run runs every check and returns the checklist. It never fails as a
// whole: what went wrong is on the lines.
func Run(ctx context.Context, cfg Config) Report {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{
			Timeout: 5 * time.Second,
			// A redirect is reported, not followed: the URL given to WeCom
			// must answer itself.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	var r Report
	cr, err := crypto.New(cfg.CallbackToken, cfg.CallbackAESKey)
	if err != nil {
		r = append(r, Line{Fail, LineCallbackKeys, fmt.Sprintf("WECOM_CALLBACK_TOKEN / WECOM_CALLBACK_AES_KEY: %v", err),
			fixCallbackSettings(cfg.WeCom.AgentID)})
	} else {
		r = append(r, Line{Pass, LineCallbackKeys, "the Token and the 43-character EncodingAESKey are well-formed", ""})
	}
	r = append(r, checkWeCom(ctx, cfg)...)
	r = append(r, checkStore(ctx, cfg)...)
	r = append(r, checkCallbackURL(ctx, cfg, cr))
	r = append(r, checkWebhook(ctx, cfg))
	return r
}

// checkStore reports the database, and the quota counted in it.
func checkStore(ctx context.Context, cfg Config) []Line {
	where := store.RedactDSN(cfg.DB)
	in, err := store.Inspect(ctx, cfg.DB)
	if err != nil {
		return []Line{
			{Fail, LineDatabase, fmt.Sprintf("cannot read %s: %v", where, err),
				"check PENDINGLINK_DB (a SQLite path whose directory exists, or postgres://user:password@host:5432/db) and that the server answers from here"},
			{Skip, LineQuota, "not read: the database is not readable (above)", ""},
		}
	}
	defer in.Close()
	return []Line{databaseLine(in.Info(), where), quotaLine(ctx, cfg, in)}
}

func databaseLine(info store.Info, where string) Line {
	if unknown := info.Unknown(); len(unknown) > 0 {
		return Line{Fail, LineDatabase, fmt.Sprintf("%s was migrated by a newer pendinglink: migrations %v are unknown to this build", where, unknown),
			"run the pendinglink version that migrated it (or newer)"}
	}
	engine := "SQLite"
	if info.Engine == store.EnginePostgres {
		engine = "PostgreSQL"
	}
	if !info.Exists {
		return Line{Pass, LineDatabase, fmt.Sprintf("%s file %s does not exist yet: serve creates it and applies %d migrations",
			engine, where, len(info.Known)), ""}
	}
	text := fmt.Sprintf("%s %s at %s, %d of %d migrations applied, %s", engine, info.ServerVersion, where,
		len(info.Applied), len(info.Known), humanBytes(info.SizeBytes))
	if p := info.Pending(); len(p) > 0 {
		text += fmt.Sprintf("; serve applies migrations %v at start", p)
	}
	return Line{Pass, LineDatabase, text, ""}
}

// readOnlyQuota lets a quota.Limiter read the counters without ever
// writing one.
type readOnlyQuota struct{ *store.Inspector }

func (readOnlyQuota) AddQuota(context.Context, string, int64, int64) error {
	return errors.New("check: the quota is only read")
}

func quotaLine(ctx context.Context, cfg Config, in *store.Inspector) Line {
	var parts, spent []string
	for _, qc := range cfg.Quotas {
		qc.Store, qc.Now = readOnlyQuota{in}, cfg.Now
		lim, err := quota.New(ctx, qc)
		if err != nil {
			return Line{Fail, LineQuota, fmt.Sprintf("cannot read %s: %v", qc.Key, err), "see the database line"}
		}
		api, _, _ := strings.Cut(qc.Key, ":")
		var ws []string
		for _, u := range lim.Usage() {
			w := window(u.Length)
			ws = append(ws, fmt.Sprintf("%s of %s per %s", humanCount(u.Used), humanCount(u.Limit), w))
			if u.Used >= u.Limit {
				spent = append(spent, api+" per "+w)
			}
		}
		parts = append(parts, api+" "+strings.Join(ws, ", "))
	}
	text := "used " + strings.Join(parts, "; ")
	if len(spent) > 0 {
		// Not a fault of the deployment: the work waits for the window.
		text += "; spent now, so that work waits: " + strings.Join(spent, ", ")
	}
	return Line{Pass, LineQuota, text, ""}
}

// window names a quota window: hour, day, 31 days.
func window(d time.Duration) string {
	switch {
	case d == time.Hour:
		return "hour"
	case d == 24*time.Hour:
		return "day"
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.String()
}

func checkWebhook(ctx context.Context, cfg Config) Line {
	if cfg.Webhook == nil {
		return Line{Skip, LineWebhook, "none configured (PENDINGLINK_WEBHOOK_URL is empty): link notifications stay in the outbox table", ""}
	}
	where := redactURL(cfg.Webhook.URL)
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := cfg.Webhook.SendTest(ctx, cfg.Now()); err != nil {
		return Line{Fail, LineWebhook, fmt.Sprintf("a signed test delivery to %s failed: %v", where, err),
			"the endpoint must answer 2xx to a POST signed with PENDINGLINK_WEBHOOK_SECRET in X-Pendinglink-Signature (README, Webhook); check the URL and that both sides use the same secret"}
	}
	return Line{Pass, LineWebhook, fmt.Sprintf("%s acknowledged a signed test delivery (type %q)", where, pipeline.TypeTest), ""}
}

// redactURL keeps scheme, host and path: user info and the query may hold
// credentials.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}
