package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// demoOptions size the demo world.
type demoOptions struct {
	fans, customers, dealers int
	// fanShare is the fraction of customers who are registered fans.
	fanShare float64
	// chats and chatSize: group chats whose members join through callbacks.
	chats, chatSize int
	// removals: customers removed again after they were added.
	removals int
	// dupShare: callbacks WeCom delivers twice.
	dupShare float64
	keep     bool
	seed     uint64
	timeout  time.Duration
	// rate paces callbacks (per second; 0: as fast as 32 connections go).
	rate int
	// wecomLatency is added by the fake to every API answer.
	wecomLatency time.Duration
	// registerFirst registers every fan before the first callback, so each
	// link forms at resolution and the latency is the pipeline's own.
	registerFirst bool
	// quotaHour is the unionid_to_pending_id quota per hour (ours and the fake's).
	quotaHour int
}

// demo runs the whole mission in one process: the fake WeCom, the real
// server on a temporary database, fans registered through the API and
// customers added through real encrypted callbacks. It prints a report.
func demo(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o demoOptions
	fs.IntVar(&o.fans, "fans", 2000, "fans the brand registers")
	fs.IntVar(&o.customers, "customers", 3000, "customers the dealers add")
	fs.IntVar(&o.dealers, "dealers", 3, "dealer corps")
	fs.Float64Var(&o.fanShare, "fan-share", 0.5, "fraction of customers who are registered fans")
	fs.IntVar(&o.chats, "chats", 5, "group chats whose members join by callback")
	fs.IntVar(&o.chatSize, "chat-size", 20, "members per group chat")
	fs.IntVar(&o.removals, "removals", 100, "customers removed again")
	fs.Float64Var(&o.dupShare, "duplicates", 0.05, "fraction of callbacks WeCom delivers twice")
	fs.BoolVar(&o.keep, "keep", false, "keep serving after the report until interrupted")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed of the demo world")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up when processing takes longer")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the demo to this file")
	fs.IntVar(&o.rate, "rate", 0, "callbacks per second (0: as fast as 32 connections go)")
	fs.DurationVar(&o.wecomLatency, "wecom-latency", 0, "latency the fake WeCom adds to every API call")
	fs.BoolVar(&o.registerFirst, "register-first", false, "register every fan before the first callback")
	fs.IntVar(&o.quotaHour, "quota-hour", 3_600_000, "unionid_to_pending_id quota per hour, of pendinglink and of the fake (WeCom's is 100000)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.fans < 0 || o.customers < 0 || o.dealers < 1 || o.fanShare < 0 || o.fanShare > 1 || o.chatSize > 100 ||
		o.rate < 0 || o.quotaHour < 1 {
		return errors.New("demo: flags out of range")
	}
	stop, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stop()
	return runDemo(ctx, o, getenv, stdout, stderr)
}

func runDemo(ctx context.Context, o demoOptions, getenv func(string) string, stdout, stderr io.Writer) error {
	start := time.Now()
	rng := rand.New(rand.NewPCG(o.seed, o.seed^0x9e3779b97f4a7c15))

	// The fake answers pending_ids for people the brand has not registered
	// yet (protocol reference §9 #17), so matching is shown in both orders.
	// Its quota is raised with ours (--quota-hour) so the demo fits in a
	// minute; production keeps WeCom's 100,000/hour.
	demoQuotaHour := o.quotaHour
	wc := wecomtest.NewUnstartedServer(
		wecomtest.WithFaults(wecomtest.Faults{Latency: o.wecomLatency}),
		wecomtest.WithPendingForUnregistered(true),
		wecomtest.WithQuotas(wecomtest.Quota{Hour: demoQuotaHour, Day: 10 * demoQuotaHour, Month: 100 * demoQuotaHour}, wecomtest.Quota{}),
	)
	wc.Start()
	defer wc.Close()

	dir, err := os.MkdirTemp("", "pendinglink-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	token, aesKey, admin := randomToken(16), randomAESKey(), randomToken(32)
	dealers := make([]wecomtest.Dealer, o.dealers)
	downstream := ""
	for i := range dealers {
		dealers[i] = wc.AddDealer(fmt.Sprintf("dealer-%d", i+1), "staff-a", "staff-b", "staff-c")
		if i > 0 {
			downstream += ","
		}
		downstream += dealers[i].CorpID
	}
	env := map[string]string{
		"WECOM_CORP_ID": wc.CorpID, "WECOM_AGENT_ID": strconv.FormatInt(wc.AgentID, 10), "WECOM_CORP_SECRET": wc.CorpSecret,
		"WECOM_CALLBACK_TOKEN": token, "WECOM_CALLBACK_AES_KEY": aesKey, "WECOM_API_BASE": wc.URL,
		"WECOM_DOWNSTREAM_CORP_IDS": downstream,
		"WECOM_PENDING_QUOTA_HOUR":  strconv.Itoa(demoQuotaHour), "WECOM_PENDING_QUOTA_DAY": strconv.Itoa(10 * demoQuotaHour),
		"WECOM_PENDING_QUOTA_MONTH": strconv.Itoa(100 * demoQuotaHour),
		"PENDINGLINK_ADMIN_TOKEN":   admin, "PENDINGLINK_ADDR": "127.0.0.1:0",
		"PENDINGLINK_DB": filepath.Join(dir, "demo.db"), "PENDINGLINK_LOG_LEVEL": "warn",
	}
	// The pipeline's tuning knobs pass through, to try them on the demo.
	for _, k := range []string{"PENDINGLINK_RESOLVE_WINDOW", "PENDINGLINK_RESOLVE_WORKERS", "PENDINGLINK_LOG_LEVEL"} {
		if v := getenv(k); v != "" {
			env[k] = v
		}
	}
	cfg, err := loadConfig("demo", nil, mapEnv(env), stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	a, err := startApp(ctx, cfg, logger, appOptions{HTTPClient: wc.HTTPClient()})
	if err != nil {
		return err
	}
	defer a.close()
	base := "http://" + a.addr.String()
	api := &demoAPI{base: base, token: admin, client: &http.Client{Timeout: 30 * time.Second}}
	fmt.Fprintf(stdout, "pendinglink demo: fake WeCom at %s, server at %s\n", wc.URL, base)

	// The world: fans (registered by the brand) and other people.
	fans := make([]wecomtest.Person, o.fans)
	for i := range fans {
		fans[i] = wc.AddPerson()
	}
	nFanCustomers := min(o.fans, int(float64(o.customers)*o.fanShare))
	// Register every fan through the API, in batches, while the dealers
	// start adding customers: half the links form at registration, half at
	// resolution.
	var regWG sync.WaitGroup
	var regErr error
	var regDone time.Time
	regStart := time.Now()
	regWG.Go(func() {
		defer func() { regDone = time.Now() }()
		for i := 0; i < len(fans); i += apiclient.MaxFansPerBatch {
			batch := make([]store.FanInput, 0, apiclient.MaxFansPerBatch)
			for _, p := range fans[i:min(i+apiclient.MaxFansPerBatch, len(fans))] {
				batch = append(batch, store.FanInput{UnionID: p.UnionID, OpenID: p.OpenID})
			}
			if err := api.post(ctx, "/v1/fans/batch", batch); err != nil {
				regErr = err
				return
			}
		}
		// Registration is done when every fan holds a pending_id.
		regErr = waitFor(ctx, o.timeout, func() (bool, error) {
			var st apiclient.StatusResponse
			err := api.get(ctx, "/v1/status", &st)
			return st.Fans.Registered >= int64(len(fans)), err
		})
	})
	if o.registerFirst {
		regWG.Wait()
	}

	sender := wc.Sender(base+cfg.CallbackPath, token, aesKey)
	var (
		events   []wecom.Event
		expected = map[string]bool{} // "unionid|corp|external" of links that must exist and be active
		removed  = map[string]bool{}
		added    []wecomtest.Customer
		perCorp  = map[string]int{}
		perChat  = map[string]int{}
		inChat   = map[string]bool{} // links a chat join may (re)create: never removed, to keep the expectation exact
	)
	fanIdx := rng.Perm(len(fans))
	for i := range o.customers {
		d := dealers[i%len(dealers)]
		var p wecomtest.Person
		isFan := i < nFanCustomers
		if isFan {
			p = fans[fanIdx[i%len(fanIdx)]]
		} else {
			p = wc.AddPerson()
		}
		c := wc.AddCustomer(d, p, d.Staff[rng.IntN(len(d.Staff))])
		added = append(added, c)
		events = append(events, wc.ContactEvent(c, wecom.ChangeAddExternalContact))
		perCorp[d.CorpID]++
		if isFan {
			key := p.UnionID + "|" + d.CorpID + "|" + c.ExternalUserID
			expected[key] = true
		}
	}
	for i := range o.chats {
		d := dealers[i%len(dealers)]
		chat := wc.AddGroupChat(d, d.Staff[0])
		members := make([]wecomtest.Person, o.chatSize)
		for j := range members {
			if j%2 == 0 && len(fans) > 0 {
				members[j] = fans[rng.IntN(len(fans))]
			} else {
				members[j] = wc.AddPerson()
			}
		}
		ev := wc.AddChatMembers(chat, members...)
		events = append(events, ev)
		perChat[d.CorpID+"|"+chat.ID] += len(ev.MemChangeList)
		for j, m := range members {
			if j%2 == 0 && len(fans) > 0 {
				key := m.UnionID + "|" + d.CorpID + "|" + wc.ExternalUserID(d, m)
				expected[key] = true
				inChat[key] = true
			}
		}
	}
	rng.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })

	// Deliver: 32 connections, a share of events delivered twice (WeCom's
	// retries), each acknowledged event timed for the latency report.
	sentAt := map[string]time.Time{} // corp|external -> first ack
	var mu sync.Mutex
	deliver := func(evs []wecom.Event) error {
		jobs := make(chan wecom.Event)
		var wg sync.WaitGroup
		var firstErr error
		for range 32 {
			wg.Go(func() {
				for ev := range jobs {
					res, err := sender.Send(ctx, ev)
					mu.Lock()
					if err != nil || res.Status != http.StatusOK {
						if firstErr == nil {
							firstErr = fmt.Errorf("deliver %s: status %d: %w", ev.ChangeType, res.Status, err)
						}
					} else if ev.ChangeType == wecom.ChangeAddExternalContact {
						k := ev.ToUserName + "|" + ev.ExternalUserID
						if _, ok := sentAt[k]; !ok {
							sentAt[k] = time.Now()
						}
					} else if ev.UpdateDetail == wecom.ChatAddMember {
						for _, m := range ev.MemChangeList {
							if _, ok := sentAt[ev.ToUserName+"|"+m]; !ok {
								sentAt[ev.ToUserName+"|"+m] = time.Now()
							}
						}
					}
					mu.Unlock()
				}
			})
		}
		var pace *time.Ticker
		if o.rate > 0 {
			pace = time.NewTicker(time.Second / time.Duration(o.rate))
			defer pace.Stop()
		}
		for _, ev := range evs {
			if pace != nil {
				<-pace.C
			}
			jobs <- ev
			if rng.Float64() < o.dupShare {
				jobs <- ev
			}
		}
		close(jobs)
		wg.Wait()
		return firstErr
	}
	callbacks := len(events)
	if err := deliver(events); err != nil {
		return err
	}
	regWG.Wait()
	if regErr != nil {
		return regErr
	}

	// Removals: some fan customers delete their staff member afterwards.
	var dels []wecom.Event
	for _, c := range added {
		if len(dels) >= o.removals {
			break
		}
		key := c.Person.UnionID + "|" + c.Dealer.CorpID + "|" + c.ExternalUserID
		if !expected[key] || removed[key] || inChat[key] {
			continue
		}
		if err := waitFor(ctx, 30*time.Second, func() (bool, error) { return api.linked(ctx, c.Dealer.CorpID, c.ExternalUserID) }); err != nil {
			return fmt.Errorf("waiting for the link before removing it: %w", err)
		}
		wc.RemoveCustomer(c)
		dels = append(dels, wc.ContactEvent(c, wecom.ChangeDelFollowUser))
		removed[key] = true
	}
	if err := deliver(dels); err != nil {
		return err
	}
	callbacks += len(dels)

	// Wait until every job is done.
	var st apiclient.StatusResponse
	err = waitFor(ctx, o.timeout, func() (bool, error) {
		if err := api.get(ctx, "/v1/status", &st); err != nil {
			return false, err
		}
		return st.Queue.Pending == 0 && st.Events.Pending == 0, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the pipeline (%+v): %w", st.Queue, err)
	}
	elapsed := time.Since(start)

	// Report.
	links, err := a.db.FindLinks(ctx, store.LinkFilter{Limit: 1_000_000})
	if err != nil {
		return err
	}
	var active, correct int
	var lat []time.Duration
	for _, l := range links {
		key := l.UnionID + "|" + l.CorpID + "|" + l.ExternalUserID
		if expected[key] {
			correct++
		}
		if l.Active {
			active++
		}
		if at, ok := sentAt[l.CorpID+"|"+l.ExternalUserID]; ok {
			lat = append(lat, max(0, l.MatchedAt.Sub(at)))
		}
	}
	minCalls := 0
	for _, n := range perCorp {
		minCalls += (n + wecom.MaxBatchIDs - 1) / wecom.MaxBatchIDs
	}
	for _, n := range perChat {
		minCalls += (n + wecom.MaxBatchIDs - 1) / wecom.MaxBatchIDs
	}
	batchCalls := wc.Calls(wecomtest.APIExternalUserIDToPendingID)
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))].Round(time.Millisecond)
	}
	w := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }
	w("")
	w("world             %d fans, %d customers at %d dealers (%d of them fans), %d chats of %d, %d removals",
		o.fans, o.customers, o.dealers, nFanCustomers, o.chats, o.chatSize, len(dels))
	w("callbacks         %d sent (+ duplicates), %d stored, %d duplicates answered 200", callbacks, st.Events.Received, st.Events.Duplicate)
	w("fans              %d registered, %d unionid_to_pending_id calls, 45009 answers: %d",
		st.Fans.Registered, wc.Calls(wecomtest.APIUnionIDToPendingID), wc.Errcodes(wecomtest.APIUnionIDToPendingID)[wecom.CodeAPIFreqOutOfLimit])
	w("links             %d made, %d expected (%d correct), %d active after %d removals (expected %d)",
		len(links), len(expected), correct, active, len(dels), len(expected)-len(dels))
	w("batch calls       %d batch/external_userid_to_pending_id calls, minimum possible %d", batchCalls, minCalls)
	w("latency           callback ack to link: p50 %s, p99 %s (%d links; a link waits for its fan's registration when that comes later)", pct(0.5), pct(0.99), len(lat))
	if regDone.After(regStart) && len(fans) > 0 {
		took := regDone.Sub(regStart).Seconds()
		w("registration      %d fans in %.1fs: %.1f/s against a quota rate of %.1f/s", len(fans), took,
			float64(len(fans))/took, float64(demoQuotaHour)/3600)
	}
	w("elapsed           %s", elapsed.Round(time.Millisecond))
	w("status            curl -H 'Authorization: Bearer %s' %s/v1/status", admin, base)
	ok := len(links) == len(expected) && correct == len(expected) && active == len(expected)-len(dels)
	if !ok {
		return errors.New("demo: links differ from the expected links")
	}
	if o.keep {
		w("serving until interrupted (--keep)")
		<-ctx.Done()
	}
	return nil
}

// waitFor polls cond every 100 ms until it holds, fails, or the timeout ends.
func waitFor(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// demoAPI is a small client of the /v1 API.
type demoAPI struct {
	base, token string
	client      *http.Client
}

func (d *demoAPI) do(ctx context.Context, method, path string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.base+path, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+d.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotFound {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil && resp.StatusCode < 300 {
		return resp.StatusCode, json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode, nil
}

func (d *demoAPI) post(ctx context.Context, path string, in any) error {
	_, err := d.do(ctx, http.MethodPost, path, in, nil)
	return err
}

func (d *demoAPI) get(ctx context.Context, path string, out any) error {
	_, err := d.do(ctx, http.MethodGet, path, nil, out)
	return err
}

func (d *demoAPI) linked(ctx context.Context, corpID, externalUserID string) (bool, error) {
	var c store.CustomerDetail
	code, err := d.do(ctx, http.MethodGet, "/v1/customers/"+corpID+"/"+externalUserID, nil, &c)
	if err != nil || code == http.StatusNotFound {
		return false, err
	}
	for _, l := range c.Links {
		if l.Active {
			return true, nil
		}
	}
	return false, nil
}
