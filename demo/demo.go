// Package demo runs the whole mission in one process: the fake WeCom, a real
// pendinglink server on a temporary database (started by the caller's
// Options.StartServer), fans registered through the /v1 API and customers
// added through real encrypted callbacks. It prints a report and fails if
// any expected link is missing or extra. "pendinglink demo" is its command.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
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

// Options size the demo world. Zero values are not defaulted: the command
// line supplies every value.
type Options struct {
	Fans, Customers, Dealers int
	// FanShare is the fraction of customers who are registered fans.
	FanShare float64
	// Chats and ChatSize: group chats whose members join through callbacks.
	Chats, ChatSize int
	// Removals: customers removed again after they were added.
	Removals int
	// DupShare: callbacks WeCom delivers twice.
	DupShare float64
	// Keep serves on after the report until ctx ends.
	Keep    bool
	Seed    uint64
	Timeout time.Duration
	// Rate paces callbacks (per second; 0: as fast as 32 connections go).
	Rate int
	// WeComLatency is added by the fake to every API answer.
	WeComLatency time.Duration
	// RegisterFirst registers every fan before the first callback, so each
	// link forms at resolution and the latency is the pipeline's own.
	RegisterFirst bool
	// QuotaHour is the unionid_to_pending_id quota per hour (ours and the fake's).
	QuotaHour int
	// Env holds extra server settings (PENDINGLINK_* variables) that
	// override the demo's, to try the pipeline's tuning knobs on it.
	Env map[string]string
	// StartServer starts pendinglink configured by env (the variables of
	// "pendinglink serve"), calling WeCom through httpClient, and returns its
	// base URL and a func that stops it. Required: a package cannot start
	// the server itself without importing the command.
	StartServer func(ctx context.Context, env map[string]string, httpClient *http.Client) (baseURL string, stop func() error, err error)
}

// Run builds the world, runs it against the server and writes the report
// to stdout.
func Run(ctx context.Context, o Options, stdout io.Writer) error {
	if o.StartServer == nil {
		return errors.New("demo: Options.StartServer is required: pass a func that starts pendinglink")
	}
	start := time.Now()
	rng := rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))

	// The fake answers pending_ids for people the brand has not registered
	// yet (protocol reference §9 #17), so matching is shown in both orders.
	// Its quota is raised with ours (--quota-hour) so the demo fits in a
	// minute; production keeps WeCom's 100,000/hour.
	demoQuotaHour := o.QuotaHour
	wc := wecomtest.NewUnstartedServer(
		wecomtest.WithFaults(wecomtest.Faults{Latency: o.WeComLatency}),
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
	token, aesKey, admin := wecomtest.RandomToken(16), wecomtest.RandomAESKey(), wecomtest.RandomToken(32)
	const callbackPath = "/wecom/callback"
	dealers := make([]wecomtest.Dealer, o.Dealers)
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
		"PENDINGLINK_CALLBACK_PATH": callbackPath,
	}
	maps.Copy(env, o.Env)
	base, stopServer, err := o.StartServer(ctx, env, wc.HTTPClient())
	if err != nil {
		return err
	}
	defer stopServer()
	api := &apiclient.Client{BaseURL: base, Token: admin, HTTPClient: &http.Client{Timeout: 30 * time.Second}}
	fmt.Fprintf(stdout, "pendinglink demo: fake WeCom at %s, server at %s\n", wc.URL, base)

	// The world: fans (registered by the brand) and other people.
	fans := make([]wecomtest.Person, o.Fans)
	for i := range fans {
		fans[i] = wc.AddPerson()
	}
	nFanCustomers := min(o.Fans, int(float64(o.Customers)*o.FanShare))
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
			if _, err := api.RegisterFans(ctx, batch); err != nil {
				regErr = err
				return
			}
		}
		// Registration is done when every fan holds a pending_id.
		regErr = waitFor(ctx, o.Timeout, func() (bool, error) {
			st, err := api.Status(ctx)
			return st.Fans.Registered >= int64(len(fans)), err
		})
	})
	if o.RegisterFirst {
		regWG.Wait()
	}

	sender := wc.Sender(base+callbackPath, token, aesKey)
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
	for i := range o.Customers {
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
	for i := range o.Chats {
		d := dealers[i%len(dealers)]
		chat := wc.AddGroupChat(d, d.Staff[0])
		members := make([]wecomtest.Person, o.ChatSize)
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
		if o.Rate > 0 {
			pace = time.NewTicker(time.Second / time.Duration(o.Rate))
			defer pace.Stop()
		}
		for _, ev := range evs {
			if pace != nil {
				<-pace.C
			}
			jobs <- ev
			if rng.Float64() < o.DupShare {
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
		if len(dels) >= o.Removals {
			break
		}
		key := c.Person.UnionID + "|" + c.Dealer.CorpID + "|" + c.ExternalUserID
		if !expected[key] || removed[key] || inChat[key] {
			continue
		}
		if err := waitFor(ctx, 30*time.Second, func() (bool, error) { return linked(ctx, api, c.Dealer.CorpID, c.ExternalUserID) }); err != nil {
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
	err = waitFor(ctx, o.Timeout, func() (bool, error) {
		var err error
		if st, err = api.Status(ctx); err != nil {
			return false, err
		}
		return st.Queue.Pending == 0 && st.Events.Pending == 0, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the pipeline (%+v): %w", st.Queue, err)
	}
	elapsed := time.Since(start)

	// Report.
	links, err := allLinks(ctx, api)
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
		o.Fans, o.Customers, o.Dealers, nFanCustomers, o.Chats, o.ChatSize, len(dels))
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
	if o.Keep {
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

// allLinks pages through GET /v1/links.
func allLinks(ctx context.Context, api *apiclient.Client) ([]store.Link, error) {
	var all []store.Link
	f := apiclient.LinkFilter{Limit: 1000}
	for {
		page, err := api.Links(ctx, f)
		if err != nil {
			return nil, err
		}
		all = append(all, page.Links...)
		if page.NextCursor == "" {
			return all, nil
		}
		f.Cursor = page.NextCursor
	}
}

// linked reports whether the dealer's customer has an active link; an
// unknown customer has none yet.
func linked(ctx context.Context, api *apiclient.Client, corpID, externalUserID string) (bool, error) {
	c, err := api.Customer(ctx, corpID, externalUserID)
	if apiclient.StatusCode(err) == http.StatusNotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, l := range c.Links {
		if l.Active {
			return true, nil
		}
	}
	return false, nil
}
