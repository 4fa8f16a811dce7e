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
	"strings"
	"sync"
	"time"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// DisorderOptions size the disorder scenario. Zero values are not
// defaulted: the command line supplies every value.
type DisorderOptions struct {
	Fans, Dealers, Staff int
	// Models are the pending_id models the world runs under, one run each.
	Models []wecomtest.PendingModel
	Seed   uint64
	// Timeout bounds each wait for the server to settle.
	Timeout time.Duration
	// Window is how many consecutive callbacks are shuffled together.
	Window int
	// DupShare: callbacks WeCom delivers twice.
	DupShare float64
	// Env holds extra server settings that override the scenario's.
	Env map[string]string
	// StartServer is as in Options, and the server must read the time from
	// now: the fake WeCom's clock, which stamps the events' CreateTime, so
	// that the server's own stamps (a customer found by
	// unionid_to_external_userid, the heartbeat) compare with them as with
	// WeCom. It is called twice per model, on the same database: the
	// scenario stops the server for an outage.
	StartServer func(ctx context.Context, env map[string]string, httpClient *http.Client, now func() time.Time) (baseURL string, stop func() error, err error)
}

// DisorderReport is what one run under one pending_id model found.
type DisorderReport struct {
	Model wecomtest.PendingModel
	// TruePairs are (registered fan, dealer) pairs the fake says hold at the
	// end; Linked those of them with an active link to the right id.
	TruePairs, Linked int
	// Links is every link the server made, Active those active.
	Links, Active int
	// Wrong links name an external_userid that is not the fan's in that
	// corp; WronglyActive are active without a true pair; Ended and Missing
	// are true pairs whose link is inactive or absent.
	Wrong, WronglyActive, Ended, Missing int
	// Failures describe the first few mismatches, to find them in the world.
	Failures []string
	// Calls counts the fake's answered requests per API.
	Calls                              map[string]int
	Changes, Callbacks, Dups, Downtime int
	Elapsed                            time.Duration
}

// OK reports whether the server's links are exactly the fake's truth.
func (r DisorderReport) OK() bool {
	return r.Linked == r.TruePairs && r.Wrong == 0 && r.WronglyActive == 0 && r.Ended == 0 && r.Missing == 0
}

// RunDisorder runs the disorder scenario once per model and writes a report
// per model to stdout. It fails unless every model links exactly the true
// pairs.
func RunDisorder(ctx context.Context, o DisorderOptions, stdout io.Writer) error {
	if o.StartServer == nil {
		return errors.New("demo: DisorderOptions.StartServer is required: pass a func that starts pendinglink")
	}
	if o.Fans < 20 || o.Dealers < 2 || o.Staff < 3 || o.Window < 1 || len(o.Models) == 0 {
		return errors.New("demo: disorder needs at least 20 fans, 2 dealers, 3 staff, a window of 1 and a model")
	}
	var bad []string
	for _, m := range o.Models {
		r, err := runDisorder(ctx, o, m, stdout)
		if err != nil {
			return fmt.Errorf("disorder under %s: %w", m, err)
		}
		r.write(stdout)
		if !r.OK() {
			bad = append(bad, m.String())
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("demo: disorder: links differ from the fake world under %s", strings.Join(bad, ", "))
	}
	return nil
}

func (r DisorderReport) write(stdout io.Writer) {
	w := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }
	pct := 100.0
	if r.TruePairs > 0 {
		pct = 100 * float64(r.Linked) / float64(r.TruePairs)
	}
	total := 0
	for _, n := range r.Calls {
		total += n
	}
	perLink := 0.0
	if r.Links > 0 {
		perLink = float64(total) / float64(r.Links)
	}
	w("")
	w("model             %s", r.Model)
	w("world             %d changes, %d while the server was down; %d callbacks sent (+%d duplicates)", r.Changes, r.Downtime, r.Callbacks, r.Dups)
	w("true pairs        %d, with an active link %d (%.1f %%)", r.TruePairs, r.Linked, pct)
	w("links             %d made, %d active", r.Links, r.Active)
	w("wrong links       %d", r.Wrong)
	w("wrongly active    %d", r.WronglyActive)
	w("wrongly ended     %d (%d inactive, %d missing)", r.Ended+r.Missing, r.Ended, r.Missing)
	w("wecom calls       %d, %.2f per link (batch %d, unionid_to_external_userid %d, groupchat/get %d, unionid_to_pending_id %d, tokens %d)",
		total, perLink, r.Calls[wecomtest.APIExternalUserIDToPendingID], r.Calls[wecomtest.APIUnionIDToExternalUserID],
		r.Calls[wecomtest.APIGroupChatGet], r.Calls[wecomtest.APIUnionIDToPendingID],
		r.Calls[wecomtest.APIGetToken]+r.Calls[wecomtest.APIDownstreamGetToken])
	w("elapsed           %s", r.Elapsed.Round(time.Millisecond))
	for _, f := range r.Failures {
		w("  mismatch        %s", f)
	}
}

// disorder is one run's world: the fake, the server it talks to, and the
// callbacks of the world's changes not yet delivered.
type disorder struct {
	o       DisorderOptions
	rng     *rand.Rand
	wc      *wecomtest.Server
	dealers []wecomtest.Dealer
	api     *apiclient.Client
	sender  *wecomtest.Sender
	env     map[string]string
	admin   string
	token   string
	aesKey  string
	settle  time.Duration

	queue                              []wecom.Event
	changes, callbacks, dups, downtime int
	registered                         map[string]wecomtest.Person // unionid → fan registered through the API
}

const disorderCallbackPath = "/wecom/callback"

// reconcileInterval is short so that registered fans are checked within
// the scenario; settling waits several of them.
const reconcileInterval = 500 * time.Millisecond

// customer is a (dealer, person) relationship the scenario made, with the
// staff it believes follow: the ground truth is read from the fake.
type customer struct {
	d     wecomtest.Dealer
	p     wecomtest.Person
	staff []string
}

func runDisorder(ctx context.Context, o DisorderOptions, model wecomtest.PendingModel, stdout io.Writer) (DisorderReport, error) {
	start := time.Now()
	big := wecomtest.Quota{Hour: 3_600_000, Day: 36_000_000, Month: 360_000_000}
	wc := wecomtest.NewUnstartedServer(
		wecomtest.WithPendingModel(model),
		wecomtest.WithPendingForUnregistered(true),
		wecomtest.WithQuotas(big, big),
	)
	wc.Start()
	defer wc.Close()
	// The fake clock runs at real speed, plus a second per world change
	// (step): the server's quota pacing and token expiry see time pass.
	stopClock := runClock(wc.Clock)
	defer stopClock()
	dir, err := os.MkdirTemp("", "pendinglink-disorder-")
	if err != nil {
		return DisorderReport{}, fmt.Errorf("temporary database: %w", err)
	}
	defer os.RemoveAll(dir)

	w := &disorder{
		o:          o,
		rng:        rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15)),
		wc:         wc,
		admin:      wecomtest.RandomToken(32),
		token:      wecomtest.RandomToken(16),
		aesKey:     wecomtest.RandomAESKey(),
		settle:     6 * reconcileInterval,
		registered: map[string]wecomtest.Person{},
	}
	staff := make([]string, o.Staff)
	for i := range staff {
		staff[i] = fmt.Sprintf("staff-%d", i+1)
	}
	var corps []string
	for i := range o.Dealers {
		d := wc.AddDealer(fmt.Sprintf("dealer-%d", i+1), staff...)
		w.dealers = append(w.dealers, d)
		corps = append(corps, d.CorpID)
	}
	w.env = map[string]string{
		"WECOM_CORP_ID": wc.CorpID, "WECOM_AGENT_ID": strconv.FormatInt(wc.AgentID, 10), "WECOM_CORP_SECRET": wc.CorpSecret,
		"WECOM_CALLBACK_TOKEN": w.token, "WECOM_CALLBACK_AES_KEY": w.aesKey, "WECOM_API_BASE": wc.URL,
		"WECOM_DOWNSTREAM_CORP_IDS": strings.Join(corps, ","),
		"WECOM_PENDING_QUOTA_HOUR":  strconv.Itoa(big.Hour), "WECOM_PENDING_QUOTA_DAY": strconv.Itoa(big.Day),
		"WECOM_PENDING_QUOTA_MONTH": strconv.Itoa(big.Month),
		"WECOM_EXTERNAL_QUOTA_HOUR": strconv.Itoa(big.Hour), "WECOM_EXTERNAL_QUOTA_DAY": strconv.Itoa(big.Day),
		"PENDINGLINK_ADMIN_TOKEN": w.admin, "PENDINGLINK_ADDR": "127.0.0.1:0",
		"PENDINGLINK_DB": filepath.Join(dir, "disorder.db"), "PENDINGLINK_LOG_LEVEL": "warn",
		"PENDINGLINK_CALLBACK_PATH": disorderCallbackPath,
		// The outage lasts seconds, not the default minute, and the
		// reconcile job runs often enough to finish within the scenario.
		"PENDINGLINK_RECONCILE_AFTER_DOWNTIME": "1s",
		"PENDINGLINK_RECONCILE_INTERVAL":       reconcileInterval.String(),
		// The fake answers a lookup at once; real WeCom may not know a fresh
		// add yet, which is what the default 45 s is for.
		"PENDINGLINK_NOT_CUSTOMER_YET_DELAY": "2s",
	}
	maps.Copy(w.env, o.Env)
	stop, err := w.startServer(ctx)
	if err != nil {
		return DisorderReport{}, err
	}
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	fmt.Fprintf(stdout, "pendinglink demo --scenario disorder (%s): fake WeCom at %s, server at %s\n", model, wc.URL, w.api.BaseURL)

	// The people: fans registered before their adds (interactively and in
	// batches), after them, fans kept for the outage, and people who are
	// customers but never registered.
	people := make([]wecomtest.Person, o.Fans)
	for i := range people {
		people[i] = wc.AddPerson()
	}
	n := len(people)
	early, late, outage, never := people[:n*35/100], people[n*35/100:n*70/100], people[n*70/100:n*80/100], people[n*80/100:]
	earlyI, earlyB := early[:len(early)/2], early[len(early)/2:]
	lateI, lateB := late[:len(late)/2], late[len(late)/2:]

	// 1. Fans registered first. RegisteredFirst answers only pending_ids
	// issued before the relationship began, so the adds wait for them.
	if err := w.register(ctx, earlyI, true); err != nil {
		return DisorderReport{}, err
	}
	if err := w.register(ctx, append(slices.Clone(earlyB), outage...), false); err != nil {
		return DisorderReport{}, err
	}
	if err := w.waitRegistered(ctx); err != nil {
		return DisorderReport{}, err
	}
	w.step()

	// Every fan and non-fan becomes a customer; a quarter are followed by
	// two staff, a tenth are customers of a second dealer too.
	var custs []*customer
	for i, p := range slices.Concat(early, late, never) {
		d := w.dealers[i%len(w.dealers)]
		custs = append(custs, w.add(d, p, w.rng.IntN(2)+1))
		if w.rng.IntN(10) == 0 {
			custs = append(custs, w.add(w.dealers[(i+1)%len(w.dealers)], p, 1))
		}
	}
	// Late fans register while those callbacks are delivered: their
	// links come from the pending_id answered at lookup, the immediate
	// check of an interactive registration or the reconcile job.
	var regWG sync.WaitGroup
	var regErr error
	regWG.Go(func() {
		if err := w.register(ctx, lateI, true); err != nil {
			regErr = err
			return
		}
		regErr = w.register(ctx, lateB, false)
	})
	flushErr := w.flush(ctx)
	regWG.Wait()
	if err := errors.Join(flushErr, regErr); err != nil {
		return DisorderReport{}, err
	}

	// 2. Live changes: staff leave multi-staff customers, transfers,
	// failed transfers, edits, adds removed at once, chats.
	var transferred []*customer
	for _, c := range custs {
		switch r := w.rng.Float64(); {
		case len(c.staff) == 2 && r < 0.5: // one of two leaves: still held
			w.remove(c, c.staff[0], wecom.ChangeDelFollowUser)
		case len(c.staff) == 2 && r < 0.75: // both leave: ended
			w.remove(c, c.staff[1], wecom.ChangeDelExternalContact)
			w.remove(c, c.staff[0], wecom.ChangeDelFollowUser)
		case len(c.staff) == 1 && r < 0.15:
			w.transfer(c)
			transferred = append(transferred, c)
		case len(c.staff) == 1 && r < 0.25:
			w.emit(w.wc.TransferFailEvent(w.cust(c, c.staff[0]), w.other(c), "customer_refused"))
		case r > 0.9:
			w.emit(w.wc.ContactEvent(w.cust(c, c.staff[0]), wecom.ChangeEditExternalContact))
		}
	}
	var racing []*customer
	for i, p := range slices.Concat(early, late) {
		if w.rng.IntN(20) != 0 {
			continue
		}
		// Added and removed before the add's lookup is likely done.
		d := w.dealers[(i+len(w.dealers)-1)%len(w.dealers)]
		if len(w.wc.Follows(d, p)) > 0 {
			continue
		}
		c := w.add(d, p, 1)
		w.remove(c, c.staff[0], wecom.ChangeDelFollowUser)
		racing = append(racing, c)
	}
	chats := w.chats(early, never)
	if err := w.flush(ctx); err != nil {
		return DisorderReport{}, err
	}

	// 3. Outage: the dealers go on while nobody hears their callbacks. The
	// server stops with work queued (resolves snoozed for a fresh add's
	// grace, checks not yet made): it resumes them at the restart.
	if err := stop(); err != nil {
		return DisorderReport{}, fmt.Errorf("stop the server: %w", err)
	}
	stop = nil
	before := w.changes
	var downAdded []*customer
	for i, p := range outage {
		c := w.add(w.dealers[i%len(w.dealers)], p, 1)
		if i%4 == 3 { // added and removed within the outage: never held
			w.remove(c, c.staff[0], wecom.ChangeDelFollowUser)
			continue
		}
		downAdded = append(downAdded, c)
	}
	for _, c := range custs {
		if len(c.staff) == 2 && w.rng.IntN(4) == 0 { // one of two leaves: still held
			w.remove(c, c.staff[0], wecom.ChangeDelFollowUser)
		}
	}
	w.downtime = w.changes - before
	w.queue = nil // never delivered
	// The server measures the outage on its own clock: it must exceed
	// PENDINGLINK_RECONCILE_AFTER_DOWNTIME (1s) for the restart to sweep.
	select {
	case <-ctx.Done():
		return DisorderReport{}, ctx.Err()
	case <-time.After(2 * time.Second):
	}
	if stop, err = w.startServer(ctx); err != nil {
		return DisorderReport{}, fmt.Errorf("restart: %w", err)
	}

	// 4. After the restart: some customers added during the outage, and
	// some transferred ones (by the colleague), are removed; one chat is
	// dismissed; a few racing customers come back.
	for i, c := range downAdded {
		if i%3 == 0 {
			w.remove(c, c.staff[0], wecom.ChangeDelExternalContact)
		}
	}
	for i, c := range transferred {
		if i%2 == 0 {
			w.remove(c, c.staff[0], wecom.ChangeDelFollowUser)
		}
	}
	if len(chats) > 0 {
		w.emit(w.wc.DismissChat(chats[0]))
		w.step()
	}
	for i, c := range racing {
		if i%2 == 0 {
			w.add(c.d, c.p, 1)
		}
	}
	if err := w.flush(ctx); err != nil {
		return DisorderReport{}, err
	}
	if err := w.waitQuiet(ctx); err != nil {
		return DisorderReport{}, fmt.Errorf("after the restart: %w", err)
	}
	r, err := w.compare(ctx, chats)
	if err != nil {
		return DisorderReport{}, err
	}
	r.Model, r.Elapsed = model, time.Since(start)
	return r, nil
}

// startServer starts pendinglink on the run's database and points the API
// client and the callback sender at it.
func (w *disorder) startServer(ctx context.Context) (func() error, error) {
	base, stop, err := w.o.StartServer(ctx, w.env, w.wc.HTTPClient(), w.wc.Clock.Now)
	if err != nil {
		return nil, fmt.Errorf("start the server: %w", err)
	}
	w.api = &apiclient.Client{BaseURL: base, Token: w.admin, HTTPClient: &http.Client{Timeout: 30 * time.Second}}
	w.sender = w.wc.Sender(base+disorderCallbackPath, w.token, w.aesKey)
	return stop, nil
}

// step moves the fake clock a second on, so that every change has its own
// CreateTime.
func (w *disorder) step() {
	w.wc.Clock.Advance(time.Second)
	w.changes++
}

// runClock advances c with real time until the returned func is called.
func runClock(c *wecomtest.Clock) (stop func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				// A tick sent before last was read is earlier than last.
				if d := now.Sub(last); d > 0 {
					c.Advance(d)
					last = now
				}
			}
		}
	}()
	return func() { close(done); <-stopped }
}

func (w *disorder) emit(ev wecom.Event) { w.queue = append(w.queue, ev) }

// add makes n staff of d follow p, each add a change with its callback.
func (w *disorder) add(d wecomtest.Dealer, p wecomtest.Person, n int) *customer {
	c := &customer{d: d, p: p}
	for _, i := range w.rng.Perm(len(d.Staff))[:n] {
		cu := w.wc.AddCustomer(d, p, d.Staff[i])
		w.emit(w.wc.ContactEvent(cu, wecom.ChangeAddExternalContact))
		c.staff = append(c.staff, d.Staff[i])
		w.step()
	}
	return c
}

// remove ends staff's follow of c with a changeType callback.
func (w *disorder) remove(c *customer, staff, changeType string) {
	cu := w.cust(c, staff)
	w.wc.RemoveCustomer(cu)
	w.emit(w.wc.ContactEvent(cu, changeType))
	c.staff = slices.DeleteFunc(c.staff, func(s string) bool { return s == staff })
	w.step()
}

// transfer hands c's only follow to a colleague.
func (w *disorder) transfer(c *customer) {
	to := w.other(c)
	_, ev := w.wc.TransferCustomer(w.cust(c, c.staff[0]), to)
	w.emit(ev)
	c.staff = []string{to}
	w.step()
}

func (w *disorder) cust(c *customer, staff string) wecomtest.Customer {
	return wecomtest.Customer{Dealer: c.d, Person: c.p, Staff: staff, ExternalUserID: w.wc.ExternalUserID(c.d, c.p)}
}

// other is a staff member of c's dealer who does not follow c.
func (w *disorder) other(c *customer) string {
	for _, i := range w.rng.Perm(len(c.d.Staff)) {
		if !slices.Contains(c.staff, c.d.Staff[i]) {
			return c.d.Staff[i]
		}
	}
	panic("demo: every staff member follows the customer")
}

// chats gives each dealer a chat of registered fans and other people,
// whose members then join and leave; it returns the chats. Chat members
// are fans registered first: WeCom reports chat members through no other
// API than the lookups of chat events, so under RegisteredFirst a fan who
// registers after joining cannot be found.
func (w *disorder) chats(fans, others []wecomtest.Person) []wecomtest.Chat {
	size := max(4, len(fans)/20)
	pick := func(from []wecomtest.Person, k int) []wecomtest.Person {
		out := make([]wecomtest.Person, 0, k)
		for _, i := range w.rng.Perm(len(from))[:min(k, len(from))] {
			out = append(out, from[i])
		}
		return out
	}
	var chats []wecomtest.Chat
	for _, d := range w.dealers {
		members := append(pick(fans, size), pick(others, size/4)...)
		ch := w.wc.AddGroupChat(d, d.Staff[0], members...)
		w.emit(w.wc.CreateChatEvent(ch))
		w.step()
		joined := append(pick(fans, size/2), pick(others, 2)...)
		for i := 0; i < len(joined); i += 3 {
			w.emit(w.wc.AddChatMembers(ch, joined[i:min(i+3, len(joined))]...))
			w.step()
		}
		// Leavers: initial members and joiners, some of them customers too.
		left := append(members[:size/3:size/3], joined[:len(joined)/3]...)
		w.emit(w.wc.RemoveChatMembers(ch, left...))
		w.step()
		chats = append(chats, ch)
	}
	return chats
}

// register registers fans through /v1/fans one by one (interactive) or
// through /v1/fans/batch.
func (w *disorder) register(ctx context.Context, fans []wecomtest.Person, interactive bool) error {
	for _, p := range fans {
		w.registered[p.UnionID] = p
	}
	if interactive {
		for _, p := range fans {
			if _, _, err := w.api.RegisterFan(ctx, store.FanInput{UnionID: p.UnionID, OpenID: p.OpenID}); err != nil {
				return fmt.Errorf("register fan %s: %w", p.UnionID, err)
			}
		}
		return nil
	}
	for i := 0; i < len(fans); i += apiclient.MaxFansPerBatch {
		batch := make([]store.FanInput, 0, apiclient.MaxFansPerBatch)
		for _, p := range fans[i:min(i+apiclient.MaxFansPerBatch, len(fans))] {
			batch = append(batch, store.FanInput{UnionID: p.UnionID, OpenID: p.OpenID})
		}
		if _, err := w.api.RegisterFans(ctx, batch); err != nil {
			return fmt.Errorf("register %d fans: %w", len(batch), err)
		}
	}
	return nil
}

// waitRegistered waits until every fan registered so far holds a pending_id.
func (w *disorder) waitRegistered(ctx context.Context) error {
	want := int64(len(w.registered))
	var st apiclient.StatusResponse
	err := waitFor(ctx, w.o.Timeout, func() (bool, error) {
		var err error
		st, err = w.api.Status(ctx)
		return st.Fans.Registered >= want, err
	})
	if err != nil {
		return fmt.Errorf("waiting for %d fans to register (%d are): %w", want, st.Fans.Registered, err)
	}
	return nil
}

// flush delivers the queued callbacks: shuffled within windows of
// o.Window (their CreateTimes stay as made), some twice, over a few
// connections so that neighbours also race.
func (w *disorder) flush(ctx context.Context) error {
	var evs []wecom.Event
	for _, ev := range w.queue {
		evs = append(evs, ev)
		if w.rng.Float64() < w.o.DupShare {
			evs = append(evs, ev)
			w.dups++
		}
	}
	w.callbacks += len(w.queue)
	w.queue = nil
	for i := 0; i < len(evs); i += w.o.Window {
		win := evs[i:min(i+w.o.Window, len(evs))]
		w.rng.Shuffle(len(win), func(a, b int) { win[a], win[b] = win[b], win[a] })
	}
	jobs := make(chan wecom.Event)
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for range cap(errs) {
		wg.Go(func() {
			for ev := range jobs {
				res, err := w.sender.Send(ctx, ev)
				if err == nil && res.Status != http.StatusOK {
					err = fmt.Errorf("status %d", res.Status)
				}
				if err != nil {
					errs <- fmt.Errorf("deliver %s %s: %w", ev.ChangeType, ev.UpdateDetail, err)
					for range jobs { // drain, so the producer does not block
					}
					return
				}
			}
		})
	}
	for _, ev := range evs {
		jobs <- ev
	}
	close(jobs)
	wg.Wait()
	close(errs)
	return <-errs // nil when none failed
}

// waitQuiet waits until the server has nothing left to do: no job or event
// pending, no sweep running, and its link counts unchanged for w.settle
// (several reconcile intervals, so that fans due a check got it).
func (w *disorder) waitQuiet(ctx context.Context) error {
	var (
		st     apiclient.StatusResponse
		last   apiclient.LinksStatus
		stable time.Time
	)
	err := waitFor(ctx, w.o.Timeout, func() (bool, error) {
		var err error
		if st, err = w.api.Status(ctx); err != nil {
			return false, err
		}
		// The periodic reconcile job is in the queue now and then: only a
		// change of the links restarts the settling.
		if st.Links != last || stable.IsZero() {
			last, stable = st.Links, time.Now()
		}
		busy := st.Queue.Pending > 0 || st.Events.Pending > 0 || st.Reconcile.Running
		return !busy && time.Since(stable) >= w.settle, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the server to settle (queue %d, events pending %d, sweep running %v): %w",
			st.Queue.Pending, st.Events.Pending, st.Reconcile.Running, err)
	}
	return nil
}

// compare reads every link and checks it against the fake's ground truth.
func (w *disorder) compare(ctx context.Context, chats []wecomtest.Chat) (DisorderReport, error) {
	r := DisorderReport{Calls: w.wc.CallCounts(), Changes: w.changes, Callbacks: w.callbacks, Dups: w.dups, Downtime: w.downtime}
	byCorp := map[string]wecomtest.Dealer{}
	for _, d := range w.dealers {
		byCorp[d.CorpID] = d
	}
	// True pairs: a registered fan held by a follow or a live chat.
	inChat := map[string]bool{} // unionid|corp
	for _, ch := range chats {
		for _, p := range w.wc.ChatMembers(ch) {
			inChat[p.UnionID+"|"+ch.Dealer.CorpID] = true
		}
	}
	truth := map[string]bool{}
	for u, p := range w.registered {
		for _, d := range w.dealers {
			if len(w.wc.Follows(d, p)) > 0 || inChat[u+"|"+d.CorpID] {
				truth[u+"|"+d.CorpID] = true
			}
		}
	}
	r.TruePairs = len(truth)
	links, err := allLinks(ctx, w.api)
	if err != nil {
		return r, fmt.Errorf("read links: %w", err)
	}
	fail := func(format string, a ...any) {
		if len(r.Failures) < 10 {
			r.Failures = append(r.Failures, fmt.Sprintf(format, a...))
		}
	}
	r.Links = len(links)
	activeOK := map[string]bool{}
	seen := map[string]bool{}
	for _, l := range links {
		key := l.UnionID + "|" + l.CorpID
		seen[key] = true
		if l.Active {
			r.Active++
		}
		p, fan := w.registered[l.UnionID]
		d, dealer := byCorp[l.CorpID]
		if !fan || !dealer || l.ExternalUserID != w.wc.ExternalUserID(d, p) {
			r.Wrong++
			fail("wrong link %s %s %s (registered fan %v)", l.UnionID, l.CorpID, l.ExternalUserID, fan)
			continue
		}
		switch {
		case l.Active && !truth[key]:
			r.WronglyActive++
			fail("wrongly active %s %s %s (%s)", l.UnionID, l.CorpID, l.ExternalUserID, l.UserID+l.ChatID)
		case l.Active:
			activeOK[key] = true
		}
	}
	for key := range truth {
		switch {
		case activeOK[key]:
			r.Linked++
		case seen[key]:
			r.Ended++
			fail("wrongly ended %s", key)
		default:
			r.Missing++
			fail("missing %s", key)
		}
	}
	return r, nil
}
