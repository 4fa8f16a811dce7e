// Package fansimport sends a file of fans (CSV or JSON lines) to a running
// pendinglink server in batches, with a checkpoint to resume from, progress
// and an ETA that respects the WeCom quota. "pendinglink fans import" is its
// command line.
package fansimport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
)

// Defaults of Options; tests pass small values instead.
const (
	defaultPollEvery   = time.Second
	defaultLogEvery    = 10 * time.Second
	defaultRetryBase   = time.Second
	defaultTries       = 5
	defaultHTTPTimeout = 2 * time.Minute

	maxRetryWait = 30 * time.Second
	// maxFanIDLen matches store.FanInput.Validate, so the server never
	// rejects a row the importer let through.
	maxFanIDLen = 128
	// maxLineLen bounds one input line; longer lines are invalid rows. JSON
	// lines may carry other fields, so this is far above two ids.
	maxLineLen = 64 << 10
	// headLen is how much of the input the checkpoint hashes.
	headLen = 64 << 10
	// invalidShown caps how many invalid rows the summary lists.
	invalidShown = 20
	// rateWindow is how far back the --wait phase measures the registration rate.
	rateWindow = time.Minute

	checkpointVersion = 1
)

// CheckpointSuffix names a file's checkpoint: FILE+CheckpointSuffix records
// how many lines of FILE the server acknowledged, so a new run resumes.
const CheckpointSuffix = ".import-state"

// ErrTokenRejected is returned when the server answers 401. It names the
// variable, never the token.
var ErrTokenRejected = errors.New("PENDINGLINK_ADMIN_TOKEN: rejected by the server")

// Options configures Run. Zero durations and counts take the
// defaults above.
type Options struct {
	File    string
	Server  string // base URL of pendinglink, e.g. http://127.0.0.1:8080
	Token   string // admin bearer token; never printed
	Batch   int    // fans per POST /v1/fans/batch, 1…apiclient.MaxFansPerBatch
	Format  string // "csv", "jsonl" or "auto"
	Wait    bool   // after submitting, follow registrations until done
	Restart bool   // ignore the checkpoint
	Yes     bool   // import even when the forecast says the quota cannot keep every fan live
	Bar     bool   // draw progress bars; otherwise print a line every LogEvery
	Stdout  io.Writer
	Client  *http.Client

	PollEvery time.Duration // how often --wait polls /v1/status
	LogEvery  time.Duration // spacing of plain progress lines
	RetryBase time.Duration // first retry's backoff; doubles per try
	Tries     int           // attempts per request on 5xx or network errors
}

func (o *Options) setDefaults() {
	if o.Batch <= 0 {
		o.Batch = apiclient.MaxFansPerBatch
	}
	if o.Format == "" {
		o.Format = "auto"
	}
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: defaultHTTPTimeout}
	}
	if o.PollEvery <= 0 {
		o.PollEvery = defaultPollEvery
	}
	if o.LogEvery <= 0 {
		o.LogEvery = defaultLogEvery
	}
	if o.RetryBase <= 0 {
		o.RetryBase = defaultRetryBase
	}
	if o.Tries <= 0 {
		o.Tries = defaultTries
	}
}

// importCheckpoint is FILE.import-state: how far an import of that file to
// that server got.
type importCheckpoint struct {
	Version int    `json:"version"`
	File    fileID `json:"file"`
	// Server is where the acknowledged lines went; another server has not seen them.
	Server string `json:"server"`
	// LinesDone counts input lines, from the first, whose fans the server acknowledged.
	LinesDone int64     `json:"lines_done"`
	Lines     int64     `json:"lines"`
	UpdatedAt time.Time `json:"updated_at"`
}

// fileID tells whether FILE is still the file a checkpoint describes. Any
// difference counts: resending costs time, skipping unsent lines loses fans.
type fileID struct {
	Size       int64     `json:"size"`
	ModTime    time.Time `json:"mtime"`
	HeadSHA256 string    `json:"head_sha256"`
}

func (a fileID) same(b fileID) bool {
	return a.Size == b.Size && a.ModTime.Equal(b.ModTime) && a.HeadSHA256 == b.HeadSHA256
}

// writeCheckpoint replaces path atomically, so a kill leaves the old or the
// new state, never a torn one.
func writeCheckpoint(path string, cp importCheckpoint) error {
	data, err := json.MarshalIndent(cp, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	_, err = tmp.Write(append(data, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write checkpoint: %w", err)
	}
	return nil
}

// readCheckpoint returns the checkpoint at path; found is false when there is none.
func readCheckpoint(path string) (cp importCheckpoint, found bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return cp, false, nil
	}
	if err != nil {
		return cp, false, fmt.Errorf("read checkpoint: %w", err)
	}
	if err := json.Unmarshal(data, &cp); err != nil || cp.Version != checkpointVersion {
		return cp, true, errors.New("unreadable")
	}
	return cp, true, nil
}

// inputInfo is what a first pass over FILE learns.
type inputInfo struct {
	id     fileID
	lines  int64
	format string
}

func scanInput(f *os.File, format string) (inputInfo, error) {
	st, err := f.Stat()
	if err != nil {
		return inputInfo{}, err
	}
	info := inputInfo{id: fileID{Size: st.Size(), ModTime: st.ModTime()}, format: format}
	head := make([]byte, headLen)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return inputInfo{}, err
	}
	head = head[:n]
	sum := sha256.Sum256(head)
	info.id.HeadSHA256 = hex.EncodeToString(sum[:])

	// Count lines so the bar knows its length; a final line without a
	// newline counts too.
	buf := make([]byte, 256<<10)
	last := byte('\n')
	for chunk := head; ; {
		info.lines += int64(bytes.Count(chunk, []byte{'\n'}))
		if len(chunk) > 0 {
			last = chunk[len(chunk)-1]
		}
		m, err := f.Read(buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return inputInfo{}, err
		}
		chunk = buf[:m]
	}
	if last != '\n' {
		info.lines++
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return inputInfo{}, err
	}

	first := firstLine(head)
	if info.format == "auto" {
		switch strings.ToLower(filepath.Ext(f.Name())) {
		case ".csv":
			info.format = "csv"
		case ".jsonl", ".json", ".ndjson":
			info.format = "jsonl"
		default:
			info.format = "csv"
			if bytes.HasPrefix(first, []byte("{")) {
				info.format = "jsonl"
			}
		}
	}
	if info.format == "jsonl" && bytes.HasPrefix(first, []byte("[")) {
		return inputInfo{}, errors.New("the file is a JSON array; write one object per line instead (jq -c '.[]' FILE)")
	}
	return info, nil
}

// firstLine returns the first non-blank line of head, trimmed, without a BOM.
func firstLine(head []byte) []byte {
	head = bytes.TrimPrefix(head, []byte("\xEF\xBB\xBF"))
	for line := range bytes.Lines(head) {
		if t := bytes.TrimSpace(line); len(t) > 0 {
			return t
		}
	}
	return nil
}

// lineReader yields FILE's lines with their 1-based numbers.
type lineReader struct {
	r *bufio.Reader
	n int64
}

// next returns the next line without its line ending, or io.EOF. A line
// longer than maxLineLen is dropped and reported as tooLong.
func (lr *lineReader) next() (line []byte, tooLong bool, err error) {
	line, err = lr.r.ReadSlice('\n')
	for errors.Is(err, bufio.ErrBufferFull) {
		tooLong, line = true, nil
		_, err = lr.r.ReadSlice('\n')
	}
	if errors.Is(err, io.EOF) {
		if len(line) == 0 && !tooLong {
			return nil, false, io.EOF
		}
		err = nil
	}
	if err != nil {
		return nil, false, err
	}
	lr.n++
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if lr.n == 1 {
		line = bytes.TrimPrefix(line, []byte("\xEF\xBB\xBF"))
	}
	return line, tooLong, nil
}

// rowParser turns one non-blank line into a fan. header reports a CSV
// header row, which is neither a fan nor invalid.
type rowParser interface {
	parse(line []byte) (fan store.FanInput, header bool, err error)
}

// csvParser reads "unionid,openid" rows. The first row is a header when it
// names both columns; then the columns may come in any order among others,
// a "priority" column (1–100, empty: none) gives each fan's priority and a
// "last_active_at" column (RFC 3339, empty: unknown) when it was last
// active.
type csvParser struct {
	started     bool
	union, open int
	priority    int // column of the optional priority, -1 if none
	lastActive  int // column of the optional last-active time, -1 if none
	header      bool
}

func (p *csvParser) parse(line []byte) (store.FanInput, bool, error) {
	r := csv.NewReader(bytes.NewReader(line))
	r.FieldsPerRecord = -1
	rec, err := r.Read()
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return store.FanInput{}, false, fmt.Errorf("bad CSV: %w", err)
	}
	for i := range rec {
		rec[i] = strings.TrimSpace(rec[i])
	}
	if !p.started {
		p.started, p.union, p.open, p.priority, p.lastActive = true, 0, 1, -1, -1
		u, o := -1, -1
		for i, name := range rec {
			// Accept "unionid", "UnionID", "union_id" and the like.
			switch strings.ToLower(strings.NewReplacer("_", "", "-", "", " ", "").Replace(name)) {
			case "unionid":
				u = i
			case "openid":
				o = i
			case "priority":
				p.priority = i
			case "lastactiveat", "lastactive":
				p.lastActive = i
			}
		}
		if u >= 0 && o >= 0 {
			p.union, p.open, p.header = u, o, true
			return store.FanInput{}, true, nil
		}
	}
	if !p.header && len(rec) != 2 {
		return store.FanInput{}, false, fmt.Errorf("want 2 columns (unionid,openid), got %d", len(rec))
	}
	if p.union >= len(rec) || p.open >= len(rec) {
		return store.FanInput{}, false, fmt.Errorf("too few columns: got %d", len(rec))
	}
	f := store.FanInput{UnionID: rec[p.union], OpenID: rec[p.open]}
	if p.header && p.priority >= 0 && p.priority < len(rec) && rec[p.priority] != "" {
		n, err := strconv.Atoi(rec[p.priority])
		if err != nil {
			return store.FanInput{}, false, fmt.Errorf("priority %q is not a whole number", rec[p.priority])
		}
		f.Priority = n
	}
	if p.header && p.lastActive >= 0 && p.lastActive < len(rec) && rec[p.lastActive] != "" {
		t, err := time.Parse(time.RFC3339, rec[p.lastActive])
		if err != nil {
			return store.FanInput{}, false, fmt.Errorf("last_active_at %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", rec[p.lastActive])
		}
		f.LastActive = t
	}
	return f, false, nil
}

// jsonlParser reads one {"unionid":…,"openid":…,"priority":…,
// "last_active_at":…} object per line (priority and last_active_at, RFC
// 3339, optional); other fields are ignored.
type jsonlParser struct{}

func (jsonlParser) parse(line []byte) (store.FanInput, bool, error) {
	var f store.FanInput
	if err := json.Unmarshal(line, &f); err != nil {
		return f, false, fmt.Errorf("bad JSON: %w", err)
	}
	f.UnionID, f.OpenID = strings.TrimSpace(f.UnionID), strings.TrimSpace(f.OpenID)
	return f, false, nil
}

// checkFan applies the server's rules with messages that name the field.
func checkFan(f store.FanInput) error {
	switch {
	case f.UnionID == "" && f.OpenID == "":
		return errors.New("missing unionid and openid")
	case f.UnionID == "":
		return errors.New("missing unionid")
	case f.OpenID == "":
		return errors.New("missing openid")
	case len(f.UnionID) > maxFanIDLen:
		return fmt.Errorf("unionid is %d bytes, over %d", len(f.UnionID), maxFanIDLen)
	case len(f.OpenID) > maxFanIDLen:
		return fmt.Errorf("openid is %d bytes, over %d", len(f.OpenID), maxFanIDLen)
	}
	// The server's clock decides; ours catches a time far in the future
	// before it costs a round trip.
	return f.ValidateAt(time.Now())
}

// retryable reports errors worth another try: no answer (a *url.Error),
// 5xx or 429.
func retryable(err error) bool {
	var ue *url.Error
	code := apiclient.StatusCode(err)
	return code >= 500 || code == http.StatusTooManyRequests || (code == 0 && errors.As(err, &ue))
}

// tokenChecked turns a 401 into ErrTokenRejected, which names the variable
// to fix.
func tokenChecked(err error) error {
	if apiclient.StatusCode(err) == http.StatusUnauthorized {
		return ErrTokenRejected
	}
	return err
}

// retry runs f until it succeeds, fails for good, ctx ends or tries run
// out, backing off exponentially with jitter in between.
func retry(ctx context.Context, tries int, base time.Duration, note func(string), what string, f func() error) error {
	for try := 1; ; try++ {
		err := f()
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return err
		}
		if try >= tries {
			return fmt.Errorf("%s: gave up after %d tries: %w", what, tries, err)
		}
		wait := min(base<<(try-1), maxRetryWait)
		wait += time.Duration(rand.Int64N(int64(wait)/5 + 1)) // spread retries of several importers
		note(fmt.Sprintf("%s: %v; try %d of %d in %s", what, err, try+1, tries, wait.Round(time.Millisecond)))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// invalidRow is an input line that was not sent.
type invalidRow struct {
	Line   int64
	Reason string
}

// importRun holds one run's counters and output.
type importRun struct {
	opts     Options
	api      *apiclient.Client
	cpPath   string
	cp       importCheckpoint
	format   string
	started  time.Time
	resumed  int64 // lines acknowledged by earlier runs
	read     int64 // lines read in this run
	invalid  []invalidRow
	nInvalid int64
	sent     int64
	queued   int64
	skipped  int64

	regBase, regNow int64 // fans.registered before the run and at the last poll
	statusSeen      bool  // regNow is from a poll after the run started

	bar     *progressbar.ProgressBar
	lastLog time.Time
}

// Run sends opts.File to opts.Server and, with opts.Wait, follows the
// registrations until they are done. It prints progress and a summary to
// opts.Stdout, also when it fails or ctx ends.
func Run(ctx context.Context, opts Options) error {
	opts.setDefaults()
	f, err := os.Open(opts.File)
	if err != nil {
		return fmt.Errorf("fans import: %w", err)
	}
	defer f.Close()
	info, err := scanInput(f, opts.Format)
	if err != nil {
		return fmt.Errorf("fans import: %s: %w", opts.File, err)
	}

	run := &importRun{
		opts:    opts,
		api:     &apiclient.Client{BaseURL: opts.Server, Token: opts.Token, HTTPClient: opts.Client},
		cpPath:  opts.File + CheckpointSuffix,
		format:  info.format,
		started: time.Now(),
	}
	run.cp = importCheckpoint{Version: checkpointVersion, File: info.id, Server: opts.Server, Lines: info.lines}
	if !opts.Restart {
		old, found, err := readCheckpoint(run.cpPath)
		switch {
		case err != nil:
			run.printf("checkpoint %s is %v; starting from line 1\n", run.cpPath, err)
		case !found:
		case !old.File.same(info.id):
			run.printf("checkpoint %s is for a different file (size, time or content changed); starting from line 1\n", run.cpPath)
		case old.Server != opts.Server:
			run.printf("checkpoint %s is for another server (%s); starting from line 1\n", run.cpPath, old.Server)
		default:
			run.resumed = min(old.LinesDone, info.lines)
			run.cp.LinesDone = run.resumed
		}
	}

	// Fail fast on a wrong token or server, before reading anything, and
	// take the baseline for "registered during this run".
	st, err := run.status(ctx)
	if err != nil {
		return fmt.Errorf("fans import: %w", err)
	}
	run.regBase, run.regNow = st.Fans.Registered, st.Fans.Registered
	if err := run.forecast(ctx, info.lines-run.resumed); err != nil {
		return fmt.Errorf("fans import: %w", err)
	}
	// Writing now proves the checkpoint can be written before anything is sent.
	if err := run.checkpoint(run.cp.LinesDone); err != nil {
		return fmt.Errorf("fans import: %w", err)
	}

	from := "line 1"
	if run.resumed > 0 {
		from = fmt.Sprintf("after line %d (checkpoint %s)", run.resumed, run.cpPath)
	}
	run.printf("importing %s (%s, %d lines) into %s, starting %s\n", opts.File, info.format, info.lines, opts.Server, from)

	err = run.submit(ctx, f)
	if err == nil && opts.Wait {
		err = run.wait(ctx)
	} else {
		run.refreshRegistered(context.WithoutCancel(ctx))
	}
	run.summary()
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("fans import: interrupted; lines 1-%d are acknowledged (%s), run the same command again to resume", run.cp.LinesDone, run.cpPath)
	default:
		return fmt.Errorf("fans import: %w", err)
	}
}

// ErrOverCapacity is returned, before anything is sent, when the file's fans
// and the live ones exceed what the quota keeps live and Options.Yes is not
// set.
var ErrOverCapacity = errors.New("the fans exceed what the unionid_to_pending_id quota keeps live (sustainable_live_fans of GET /v1/quota); pass --yes to import anyway, knowing some will expire unrenewed")

// forecast prints when the quota lets the server register the file's n fans
// (at most: the count includes a header and invalid lines), after what is
// queued ahead of them, and stops the import when they would exceed what
// the quota keeps live, unless Options.Yes.
func (r *importRun) forecast(ctx context.Context, n int64) error {
	q, err := r.api.Quota(ctx)
	var ae *apiclient.Error
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		r.note("forecast: the server has no /v1/quota (an older version); none given")
		return nil
	}
	if err != nil {
		return fmt.Errorf("quota forecast: %w", err)
	}
	var (
		ahead int64
		us    []quota.Usage
	)
	for _, b := range q.Registrations {
		ahead += b.Count
	}
	for _, api := range q.APIs {
		if api.API == wecom.APIUnionIDToPendingID {
			us = quotaUsage(api.Windows)
		}
	}
	eta := quota.TimeFor(us, ahead+n)
	r.printf("forecast: up to %d fans; with %d registrations queued ahead, the quota lets the last be registered within %s\n",
		n, ahead, etaText(eta))
	if s := q.SustainableLiveFans; s > 0 && q.LivePendingIDs+n > s {
		r.printf("forecast: %d live and up to %d new fans exceed the %d the quota keeps live\n", q.LivePendingIDs, n, s)
		if !r.opts.Yes {
			return ErrOverCapacity
		}
	}
	return nil
}

func (r *importRun) printf(format string, args ...any) {
	if r.bar != nil {
		r.bar.Clear() // the bar redraws itself on its next update
	}
	fmt.Fprintf(r.opts.Stdout, format, args...)
}

func (r *importRun) note(msg string) { r.printf("%s\n", msg) }

// endBar leaves the bar's last state on its own line.
func (r *importRun) endBar() {
	r.bar.Exit()
	fmt.Fprintln(r.opts.Stdout)
	r.bar = nil
}

func (r *importRun) status(ctx context.Context) (apiclient.StatusResponse, error) {
	var st apiclient.StatusResponse
	err := retry(ctx, r.opts.Tries, r.opts.RetryBase, r.note, "GET /v1/status", func() (err error) {
		st, err = r.api.Status(ctx)
		return tokenChecked(err)
	})
	return st, err
}

// refreshRegistered updates regNow for the summary, best effort.
func (r *importRun) refreshRegistered(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if st, err := r.api.Status(ctx); err == nil {
		r.regNow, r.statusSeen = st.Fans.Registered, true
	}
}

func (r *importRun) checkpoint(linesDone int64) error {
	r.cp.LinesDone = linesDone
	r.cp.UpdatedAt = time.Now().UTC()
	return writeCheckpoint(r.cpPath, r.cp)
}

// pendingRow is a valid fan waiting in the current batch.
type pendingRow struct {
	line int64
	fan  store.FanInput
}

// submit reads the input after the resume point and sends it in batches.
func (r *importRun) submit(ctx context.Context, f *os.File) error {
	var parser rowParser = jsonlParser{}
	csvp := &csvParser{}
	if r.format == "csv" {
		parser = csvp
	}
	todo := r.cp.Lines - r.resumed
	if r.opts.Bar && todo > 0 {
		r.bar = progressbar.NewOptions64(todo,
			progressbar.OptionSetWriter(r.opts.Stdout),
			progressbar.OptionSetDescription("submitting"),
			progressbar.OptionSetItsString("lines"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionFullWidth(),
		)
		defer r.endBar()
		r.bar.RenderBlank()
	}
	r.lastLog = time.Now()

	lr := &lineReader{r: bufio.NewReaderSize(f, maxLineLen)}
	batch := make([]pendingRow, 0, r.opts.Batch)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		line, tooLong, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", r.opts.File, err)
		}
		if lr.n <= r.resumed {
			// Sent by an earlier run; a CSV header still sets the columns.
			if !csvp.started && r.format == "csv" && !tooLong && len(bytes.TrimSpace(line)) > 0 {
				csvp.parse(line)
			}
			continue
		}
		r.read++
		if tooLong {
			r.addInvalid(lr.n, fmt.Sprintf("line longer than %d bytes", maxLineLen))
			continue
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		fan, header, err := parser.parse(line)
		if err == nil && !header {
			err = checkFan(fan)
		}
		switch {
		case header:
		case err != nil:
			r.addInvalid(lr.n, err.Error())
		default:
			batch = append(batch, pendingRow{line: lr.n, fan: fan})
		}
		if len(batch) == r.opts.Batch {
			if err := r.send(ctx, batch, lr.n); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	// The tail: the last fans, and any invalid or blank lines after them.
	if len(batch) > 0 {
		if err := r.send(ctx, batch, lr.n); err != nil {
			return err
		}
	} else if lr.n > r.cp.LinesDone {
		if err := r.checkpoint(lr.n); err != nil {
			return err
		}
		r.progress(lr.n)
	}
	if r.bar != nil {
		r.bar.Finish()
	}
	r.logf("submitted %d lines: %d fans sent, %d queued, %d skipped, %d invalid\n", r.read, r.sent, r.queued, r.skipped, r.nInvalid)
	return nil
}

func (r *importRun) addInvalid(line int64, reason string) {
	r.nInvalid++
	if len(r.invalid) < invalidShown {
		r.invalid = append(r.invalid, invalidRow{Line: line, Reason: reason})
	}
}

// send posts one batch and, once the server acknowledged it, records that
// every line up to lastLine is done. A row the server rejects as invalid
// (400 "fan N: …") is reported and the rest sent again.
func (r *importRun) send(ctx context.Context, batch []pendingRow, lastLine int64) error {
	for len(batch) > 0 {
		fans := make([]store.FanInput, len(batch))
		for i, row := range batch {
			fans[i] = row.fan
		}
		what := fmt.Sprintf("POST /v1/fans/batch (lines %d-%d)", batch[0].line, batch[len(batch)-1].line)
		var res apiclient.BatchResponse
		err := retry(ctx, r.opts.Tries, r.opts.RetryBase, r.note, what, func() (err error) {
			res, err = r.api.RegisterFans(ctx, fans)
			return tokenChecked(err)
		})
		if err == nil {
			r.sent += int64(res.Accepted)
			r.queued += int64(res.Queued)
			r.skipped += int64(res.Skipped)
			break
		}
		var se *apiclient.Error
		if !errors.As(err, &se) || se.Status != http.StatusBadRequest {
			if se != nil && se.Status == http.StatusNotFound {
				return fmt.Errorf("%s: %w (does the server run the registration pipeline?)", what, err)
			}
			return err
		}
		i, reason, ok := rejectedFan(se.Message, len(batch))
		if !ok {
			return fmt.Errorf("%s: the server rejected the batch: %w", what, err)
		}
		r.addInvalid(batch[i].line, "rejected by the server: "+reason)
		batch = append(batch[:i:i], batch[i+1:]...)
	}
	if err := r.checkpoint(lastLine); err != nil {
		return err
	}
	r.progress(lastLine)
	return nil
}

// rejectedFan parses the server's 400 "fan N: reason" for a batch of n.
func rejectedFan(msg string, n int) (int, string, bool) {
	rest, ok := strings.CutPrefix(msg, "fan ")
	if !ok {
		return 0, "", false
	}
	num, reason, ok := strings.Cut(rest, ": ")
	i, err := strconv.Atoi(num)
	if !ok || err != nil || i < 0 || i >= n {
		return 0, "", false
	}
	return i, reason, true
}

// progress shows that lines up to done are acknowledged.
func (r *importRun) progress(done int64) {
	if r.bar != nil {
		r.bar.Set64(done - r.resumed)
		return
	}
	if time.Since(r.lastLog) >= r.opts.LogEvery {
		r.lastLog = time.Now()
		fmt.Fprintf(r.opts.Stdout, "submitted %d/%d lines: %d queued, %d skipped, %d invalid\n",
			done-r.resumed, r.cp.Lines-r.resumed, r.queued, r.skipped, r.nInvalid)
	}
}

// logf prints a plain progress line unless a bar shows the same.
func (r *importRun) logf(format string, args ...any) {
	if !r.opts.Bar {
		fmt.Fprintf(r.opts.Stdout, format, args...)
	}
}

// rateSample is fans.registered at one poll.
type rateSample struct {
	at         time.Time
	registered int64
}

// wait follows registrations until the fans queued by this run are
// registered or the server's queue drains (fans WeCom refuses never count
// as registered). Interrupting it is harmless: the server goes on.
func (r *importRun) wait(ctx context.Context) error {
	if r.queued == 0 {
		r.printf("nothing queued by this run; not waiting\n")
		r.refreshRegistered(ctx)
		return nil
	}
	if r.opts.Bar {
		r.bar = progressbar.NewOptions64(r.queued,
			progressbar.OptionSetWriter(r.opts.Stdout),
			progressbar.OptionSetDescription("registering"),
			progressbar.OptionShowCount(),
			// The bar's own ETA ignores the WeCom quota; ours is in the description.
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionShowDescriptionAtLineEnd(),
			progressbar.OptionFullWidth(),
		)
		defer r.endBar()
		r.bar.RenderBlank()
	}
	r.lastLog = time.Time{}
	var samples []rateSample
	ticker := time.NewTicker(r.opts.PollEvery)
	defer ticker.Stop()
	for {
		st, err := r.status(ctx)
		if ctx.Err() != nil {
			r.printf("stopped waiting; the server keeps registering the queued fans\n")
			return nil
		}
		if err != nil {
			return fmt.Errorf("waiting for registrations (the import itself is complete): %w", err)
		}
		now := time.Now()
		r.regNow, r.statusSeen = st.Fans.Registered, true
		samples = append(samples, rateSample{at: now, registered: st.Fans.Registered})
		for len(samples) > 2 && now.Sub(samples[0].at) > rateWindow {
			samples = samples[1:]
		}
		done := r.regNow - r.regBase
		remaining := max(r.queued-done, 0)
		observed := observedRate(samples)
		windows := quotaUsage(st.WeCom.Quota)
		eta := waitETA(remaining, observed, windows)
		finished := remaining == 0 || st.Queue.Pending == 0
		desc := fmt.Sprintf("%s, queue %d, ETA %s", rateText(observed, quota.Rate(windows)), st.Queue.Pending, etaText(eta))
		if r.bar != nil {
			r.bar.Describe(desc)
			r.bar.Set64(min(done, r.queued))
		} else if finished || now.Sub(r.lastLog) >= r.opts.LogEvery {
			r.lastLog = now
			fmt.Fprintf(r.opts.Stdout, "registered %d/%d: %s\n", min(done, r.queued), r.queued, desc)
		}
		if finished {
			if r.bar != nil {
				r.bar.Finish()
			}
			if remaining > 0 {
				r.printf("the server's queue is empty; %d queued fans were not registered (see wecom.errors in /v1/status)\n", remaining)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			r.printf("stopped waiting; the server keeps registering the queued fans\n")
			return nil
		case <-ticker.C:
		}
	}
}

// observedRate is registrations per second across samples, 0 if unknown.
func observedRate(s []rateSample) float64 {
	if len(s) < 2 {
		return 0
	}
	first, last := s[0], s[len(s)-1]
	dt := last.at.Sub(first.at).Seconds()
	if dt <= 0 || last.registered <= first.registered {
		return 0
	}
	return float64(last.registered-first.registered) / dt
}

// quotaUsage reads /v1/status's quota windows, skipping any it cannot parse.
func quotaUsage(ws []apiclient.QuotaWindow) []quota.Usage {
	var out []quota.Usage
	for _, w := range ws {
		d, err := time.ParseDuration(w.Window)
		if err != nil || d <= 0 || w.Limit <= 0 {
			continue
		}
		out = append(out, quota.Usage{Length: d, Limit: w.Limit, Used: w.Used})
	}
	return out
}

// waitETA estimates how long remaining registrations take: at the observed
// rate, but never faster than the quota allows (quota.TimeFor). It is -1
// while no rate has been observed.
func waitETA(remaining int64, observed float64, us []quota.Usage) time.Duration {
	if remaining <= 0 {
		return 0
	}
	if observed <= 0 {
		return -1
	}
	secs := max(float64(remaining)/observed, quota.TimeFor(us, remaining).Seconds())
	if secs > float64(math.MaxInt64/int64(time.Second)) {
		return -1
	}
	return time.Duration(secs * float64(time.Second)).Round(time.Second)
}

func rateText(observed, quota float64) string {
	s := "rate unknown"
	if observed > 0 {
		s = fmt.Sprintf("%.2f/s", observed)
	}
	if quota > 0 {
		s += fmt.Sprintf(" (quota sustains %.2f/s)", quota)
	}
	return s
}

func etaText(d time.Duration) string {
	if d < 0 {
		return "unknown"
	}
	return d.String()
}

// summary prints what the run did; it runs on success, failure and Ctrl-C.
func (r *importRun) summary() {
	w := r.opts.Stdout
	if r.nInvalid > 0 {
		fmt.Fprintf(w, "invalid rows (not sent; first %d of %d):\n", len(r.invalid), r.nInvalid)
		for _, row := range r.invalid {
			fmt.Fprintf(w, "  line %d: %s\n", row.Line, row.Reason)
		}
	}
	fmt.Fprintf(w, "fans import summary for %s (%s):\n", r.opts.File, r.format)
	if r.resumed > 0 {
		fmt.Fprintf(w, "  resumed:     after line %d, acknowledged by an earlier run\n", r.resumed)
	}
	fmt.Fprintf(w, "  lines read:  %d\n", r.read)
	fmt.Fprintf(w, "  invalid:     %d (skipped, not sent)\n", r.nInvalid)
	fmt.Fprintf(w, "  sent:        %d\n", r.sent)
	fmt.Fprintf(w, "  queued:      %d\n", r.queued)
	fmt.Fprintf(w, "  skipped:     %d already registered or queued (re-sending is safe)\n", r.skipped)
	if r.statusSeen {
		fmt.Fprintf(w, "  registered:  %d during this run (all sources)\n", r.regNow-r.regBase)
	} else {
		fmt.Fprintf(w, "  registered:  unknown (status unavailable)\n")
	}
	fmt.Fprintf(w, "  elapsed:     %s\n", time.Since(r.started).Round(time.Millisecond))
	fmt.Fprintf(w, "  checkpoint:  %s (lines 1-%d of %d acknowledged)\n", r.cpPath, r.cp.LinesDone, r.cp.Lines)
}
