package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pendinglink/pendinglink/crypto"
	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// loadtest sends signed callbacks at a fixed rate (open loop: a slow answer
// does not slow the sender, so queueing shows up in the latencies) and reports
// throughput and ack latency. Without --url it starts pendinglink in-process on
// a temporary database with generated keys, so it needs no configuration.
func loadtest(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("url", "", "callback URL of a running pendinglink, or several separated by commas (default: start in-process)")
	dbDSN := fs.String("db", "", "database of the in-process pendinglink: a postgres:// DSN of an empty database (default: a temporary SQLite file)")
	instances := fs.Int("instances", 1, "in-process pendinglink instances sharing --db (more than 1 needs PostgreSQL); callbacks go round robin")
	rate := fs.Int("rate", 3000, "callbacks per second")
	duration := fs.Duration("duration", 10*time.Second, "how long to send")
	workers := fs.Int("workers", 256, "concurrent connections")
	dupRate := fs.Float64("duplicates", 0.05, "fraction of callbacks that repeat an earlier event (WeCom retries)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole process (sender and in-process server) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rate <= 0 || *duration <= 0 || *workers <= 0 || *dupRate < 0 || *dupRate >= 1 || *instances < 1 {
		return errors.New("loadtest: --rate, --duration, --workers and --instances must be positive, --duplicates in [0,1)")
	}
	if *instances > 1 && !strings.HasPrefix(*dbDSN, "postgres") {
		return errors.New("loadtest: --instances above 1 share one database: give a postgres:// --db")
	}

	corpID, token, aesKey := getenv("WECOM_CORP_ID"), getenv("WECOM_CALLBACK_TOKEN"), getenv("WECOM_CALLBACK_AES_KEY")
	var urls []string
	if *target != "" {
		urls = strings.Split(*target, ",")
	} else {
		// The pipeline's WeCom calls go to an in-process fake, never to WeCom.
		wc := wecomtest.NewServer()
		defer wc.Close()
		corpID, token, aesKey = wc.CorpID, wecomtest.RandomToken(16), wecomtest.RandomAESKey()
		dir, err := os.MkdirTemp("", "pendinglink-loadtest-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		db := *dbDSN
		if db == "" {
			db = filepath.Join(dir, "loadtest.db")
		}
		admin := wecomtest.RandomToken(24)
		for i := range *instances {
			cfg, err := loadConfig("loadtest", nil, mapEnv(map[string]string{
				"WECOM_CORP_ID": corpID, "WECOM_AGENT_ID": strconv.FormatInt(wc.AgentID, 10), "WECOM_CORP_SECRET": wc.CorpSecret,
				"WECOM_API_BASE":       wc.URL,
				"WECOM_CALLBACK_TOKEN": token, "WECOM_CALLBACK_AES_KEY": aesKey,
				"PENDINGLINK_ADMIN_TOKEN": admin, "PENDINGLINK_ADDR": "127.0.0.1:0",
				"PENDINGLINK_DB": db, "PENDINGLINK_LOG_LEVEL": "warn", "PENDINGLINK_INSTANCE_ID": fmt.Sprintf("loadtest-%d", i),
			}), stderr)
			if err != nil {
				return err
			}
			a, err := startApp(ctx, cfg, slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), appOptions{HTTPClient: wc.HTTPClient()})
			if err != nil {
				return err
			}
			defer a.close()
			urls = append(urls, "http://"+a.addr.String()+cfg.CallbackPath)
		}
	}
	if *target != "" && (corpID == "" || token == "" || aesKey == "") {
		return errors.New("loadtest: with --url, set WECOM_CORP_ID, WECOM_CALLBACK_TOKEN and WECOM_CALLBACK_AES_KEY of the target")
	}
	cr, err := crypto.New(token, aesKey)
	if err != nil {
		return fmt.Errorf("loadtest: %w", err)
	}

	n := int(float64(*rate) * duration.Seconds())
	fmt.Fprintf(stdout, "preparing %d signed callbacks for %s\n", n, strings.Join(urls, ", "))
	reqs, err := prepareCallbacks(cr, urls, corpID, n, *dupRate)
	if err != nil {
		return err
	}
	stop, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stop()
	res := runLoad(ctx, reqs, *rate, *workers)
	res.print(stdout, *rate)
	if res.ok == 0 {
		return errors.New("loadtest: no callback was acknowledged")
	}
	return nil
}

type preparedCallback struct {
	url  string
	body []byte
}

// prepareCallbacks encrypts every callback before the clock starts, so the
// sender's own crypto does not compete with the server for the CPU.
func prepareCallbacks(cr *crypto.Crypt, urls []string, corpID string, n int, dupRate float64) ([]preparedCallback, error) {
	out := make([]preparedCallback, n)
	now := time.Now()
	unique := 0
	for i := range out {
		id := unique
		if i > 0 && float64(i%100) < dupRate*100 {
			id = unique - 1 // a retry of the previous event: same decrypted fields, fresh ciphertext
		} else {
			unique++
		}
		ev := wecom.Event{
			ToUserName: corpID, FromUserName: "sys", CreateTime: now.Unix(), MsgType: "event",
			Event: wecom.EventChangeExternalContact, ChangeType: wecom.ChangeAddExternalContact,
			UserID: "staff" + strconv.Itoa(id%50), ExternalUserID: fmt.Sprintf("wmload%09d", id),
		}
		msg, err := ev.Marshal()
		if err != nil {
			return nil, err
		}
		ts, nonce := strconv.FormatInt(now.Unix(), 10), strconv.Itoa(100000+i)
		body, sig, err := cr.Seal(msg, corpID, corpID, "1000002", ts, nonce, nil)
		if err != nil {
			return nil, err
		}
		q := url.Values{"msg_signature": {sig}, "timestamp": {ts}, "nonce": {nonce}}
		out[i] = preparedCallback{url: urls[i%len(urls)] + "?" + q.Encode(), body: body}
	}
	return out, nil
}

type loadResult struct {
	sent, ok, failed int
	statuses         map[int]int
	elapsed          time.Duration
	latencies        []time.Duration // from the scheduled send time to the answer
}

func runLoad(ctx context.Context, reqs []preparedCallback, rate, workers int) loadResult {
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConns: workers, MaxIdleConnsPerHost: workers},
	}
	defer client.CloseIdleConnections()
	type job struct {
		i     int
		sched time.Time
	}
	jobs := make(chan job, workers)
	var (
		mu  sync.Mutex
		res = loadResult{statuses: map[int]int{}}
		wg  sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				status := send(ctx, client, reqs[j.i])
				lat := time.Since(j.sched)
				mu.Lock()
				res.statuses[status]++
				if status == http.StatusOK {
					res.ok++
					res.latencies = append(res.latencies, lat)
				} else {
					res.failed++
				}
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	timer := time.NewTimer(0)
	defer timer.Stop()
pace:
	for i := range reqs {
		sched := start.Add(time.Duration(i) * interval)
		if d := time.Until(sched); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				break pace
			case <-timer.C:
			}
		}
		jobs <- job{i: i, sched: sched}
		res.sent++
	}
	close(jobs)
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

// send posts one callback and returns the status, or 0 on a transport error.
func send(ctx context.Context, client *http.Client, c preparedCallback) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(c.body))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "text/xml")
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (r loadResult) print(w io.Writer, rate int) {
	slices.Sort(r.latencies)
	q := func(p float64) time.Duration {
		if len(r.latencies) == 0 {
			return 0
		}
		return r.latencies[min(len(r.latencies)-1, int(p*float64(len(r.latencies))))]
	}
	fmt.Fprintf(w, "target rate     %d/s\n", rate)
	fmt.Fprintf(w, "sent            %d in %s\n", r.sent, r.elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "acknowledged    %d (%.0f/s)\n", r.ok, float64(r.ok)/r.elapsed.Seconds())
	fmt.Fprintf(w, "failed          %d %v\n", r.failed, r.statuses)
	fmt.Fprintf(w, "ack latency     p50 %s  p90 %s  p99 %s  max %s\n",
		q(0.50).Round(10*time.Microsecond), q(0.90).Round(10*time.Microsecond),
		q(0.99).Round(10*time.Microsecond), q(1).Round(10*time.Microsecond))
}

func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// startCPUProfile profiles the whole process into path ("" does nothing);
// the returned func stops and flushes it.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
