package wecomtest

import (
	"crypto/md5" //nolint:gosec // only to make member-list versions look like WeCom's
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pendinglink/pendinglink/wecom"
)

// Dealer is a downstream corp that shares the brand's app.
type Dealer struct {
	Name    string
	CorpID  string   // "wwtest…"
	AgentID int64    // the shared app's id inside this corp (for corpgroup/corp/gettoken)
	Staff   []string // member userids that may add customers and own chats
}

// Person is a WeChat user known to the brand's mini-program.
type Person struct {
	UnionID string // "test-u…"
	OpenID  string // "test-o…", for the brand's mini-program
}

// Customer is a follow relationship: Staff of Dealer has added Person.
type Customer struct {
	Dealer         Dealer
	Person         Person
	Staff          string
	ExternalUserID string // "wmtest…": stable per (dealer, person), different per dealer
}

// Chat is a customer group chat of a dealer.
type Chat struct {
	ID     string // "wrtest…"
	Dealer Dealer
	Owner  string // a staff userid of Dealer
}

type extKey struct{ corpID, unionID string }

type person struct {
	Person
	pending []issued // every pending_id ever issued, oldest first
}

type issued struct {
	id       string
	issuedAt time.Time
}

type chat struct {
	Chat
	created   time.Time
	members   map[string]time.Time // unionid → when they joined, on the fake clock
	ver       int
	dismissed bool
}

type world struct {
	dealers  []Dealer
	byCorp   map[string]int // corpid → index in dealers
	persons  map[string]*person
	ext      map[extKey]string               // (dealer, person) → external_userid
	extOwner map[string]extKey               // external_userid → (dealer, person)
	follows  map[extKey]map[string]time.Time // staff following the customer → since when; none = not a customer
	chats    map[string]*chat
	n        int // id counter shared by every kind of id
}

func newWorld() world {
	return world{
		byCorp:   map[string]int{},
		persons:  map[string]*person{},
		ext:      map[extKey]string{},
		extOwner: map[string]extKey{},
		follows:  map[extKey]map[string]time.Time{},
		chats:    map[string]*chat{},
	}
}

func (w *world) next() int { w.n++; return w.n }

// AddDealer adds a downstream corp that has confirmed the app share. Its
// staff are the given userids, or "test-staff-1" when none are given.
func (s *Server) AddDealer(name string, staff ...string) Dealer {
	if len(staff) == 0 {
		staff = []string{"test-staff-1"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.w.next()
	d := Dealer{
		Name:    name,
		CorpID:  fmt.Sprintf("wwtest%s%06d", s.tag, n),
		AgentID: 1000100 + int64(n),
		Staff:   slices.Clone(staff),
	}
	s.w.byCorp[d.CorpID] = len(s.w.dealers)
	s.w.dealers = append(s.w.dealers, d)
	return cloneDealer(d)
}

// AddPerson adds a fan of the brand: somebody with a unionid and an openid
// in the brand's mini-program. The brand has not registered them yet.
func (s *Server) AddPerson() Person {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.w.next()
	p := Person{UnionID: fmt.Sprintf("test-u%s%06d", s.tag, n), OpenID: fmt.Sprintf("test-o%s%06d", s.tag, n)}
	s.w.persons[p.UnionID] = &person{Person: p}
	return p
}

// AddCustomer makes staff of d add p as a customer and returns the
// relationship, which begins now on the fake clock (adding a customer the
// staff already follows changes nothing). It panics if d, p or staff is
// unknown to this server.
func (s *Server) AddCustomer(d Dealer, p Person, staff string) Customer {
	now := s.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	dl := s.mustDealer(d)
	s.mustPerson(p)
	s.mustStaff("AddCustomer", dl, staff)
	k := extKey{dl.CorpID, p.UnionID}
	s.follow(k, staff, now)
	return Customer{Dealer: cloneDealer(dl), Person: p, Staff: staff, ExternalUserID: s.externalID(k)}
}

// follow records that staff follows k's person since start, keeping an
// earlier start. s.mu must be held.
func (s *Server) follow(k extKey, staff string, start time.Time) {
	if s.w.follows[k] == nil {
		s.w.follows[k] = map[string]time.Time{}
	}
	if old, ok := s.w.follows[k][staff]; !ok || start.Before(old) {
		s.w.follows[k][staff] = start
	}
}

// TransferCustomer hands c to colleague to (在职继承, §3.1): c.Staff stops
// following the customer and to follows them from now on. It returns the
// new relationship and the del_external_contact event WeCom sends for the
// old staff, with Source DELETE_BY_TRANSFER; WeCom sends no add event for
// to. The customer's relationship with the dealer goes on, so under
// PendingRegisteredFirst to's follow keeps the start of c.Staff's (or its
// own, if to already followed the customer and began earlier). It panics
// if to is not staff of the dealer, is c.Staff, or if c.Staff does not
// follow the customer.
func (s *Server) TransferCustomer(c Customer, to string) (Customer, wecom.Event) {
	now := s.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	dl := s.mustDealer(c.Dealer)
	s.mustPerson(c.Person)
	s.mustStaff("TransferCustomer", dl, to)
	k := extKey{dl.CorpID, c.Person.UnionID}
	start, ok := s.w.follows[k][c.Staff]
	switch {
	case !ok:
		panic(fmt.Sprintf("wecomtest: TransferCustomer: %q does not follow customer %s", c.Staff, c.ExternalUserID))
	case to == c.Staff:
		panic(fmt.Sprintf("wecomtest: TransferCustomer: %q already follows customer %s", to, c.ExternalUserID))
	}
	delete(s.w.follows[k], c.Staff)
	s.follow(k, to, start)
	ev := contactEvent(c, wecom.ChangeDelExternalContact, now)
	ev.Source = wecom.SourceDeleteByTransfer
	moved := Customer{Dealer: cloneDealer(dl), Person: c.Person, Staff: to, ExternalUserID: s.externalID(k)}
	return moved, ev
}

// TransferFailEvent returns the transfer_fail event WeCom sends when to did
// not take c over (§3.1): UserID is to, FailReason is reason
// ("customer_refused" or "customer_limit_exceed"). It changes nothing in
// the world. It panics if to is not staff of c's dealer.
func (s *Server) TransferFailEvent(c Customer, to, reason string) wecom.Event {
	now := s.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	dl := s.mustDealer(c.Dealer)
	s.mustStaff("TransferFailEvent", dl, to)
	ev := contactEvent(c, wecom.ChangeTransferFail, now)
	ev.UserID, ev.FailReason = to, reason
	return ev
}

// Follows returns the staff of d who currently follow p, sorted: the
// ground truth of who p is a customer of.
func (s *Server) Follows(d Dealer, p Person) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	dl := s.mustDealer(d)
	s.mustPerson(p)
	f := s.w.follows[extKey{dl.CorpID, p.UnionID}]
	staff := make([]string, 0, len(f))
	for u := range f {
		staff = append(staff, u)
	}
	slices.Sort(staff)
	return staff
}

// RemoveCustomer ends c's follow relationship (the staff deleted the
// customer, or the customer deleted the staff). The person stays a
// customer of the dealer while another staff member still follows them.
// The external_userid is kept: adding the person again gives the same id.
func (s *Server) RemoveCustomer(c Customer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mustDealer(c.Dealer)
	k := extKey{c.Dealer.CorpID, c.Person.UnionID}
	delete(s.w.follows[k], c.Staff)
	if len(s.w.follows[k]) == 0 {
		delete(s.w.follows, k)
	}
}

// AddGroupChat creates a customer group chat of d owned by owner, with the
// given people as members, who join now on the fake clock. Members get
// external_userids in d (the same ones AddCustomer gives) without becoming
// customers. It sends no event: CreateChatEvent returns WeCom's.
func (s *Server) AddGroupChat(d Dealer, owner string, members ...Person) Chat {
	now := s.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	dl := s.mustDealer(d)
	s.mustStaff("AddGroupChat", dl, owner)
	c := &chat{
		Chat:    Chat{ID: fmt.Sprintf("wrtest%s%06d", s.tag, s.w.next()), Dealer: cloneDealer(dl), Owner: owner},
		created: now,
		members: map[string]time.Time{},
	}
	for _, p := range members {
		s.mustPerson(p)
		s.externalID(extKey{dl.CorpID, p.UnionID})
		c.members[p.UnionID] = now
	}
	s.w.chats[c.ID] = c
	ch := c.Chat
	ch.Dealer = cloneDealer(ch.Dealer)
	return ch
}

// AddChatMembers adds people to a chat, who join now on the fake clock (a
// person already in the chat keeps their join time), and returns the
// change_external_chat update/add_member event WeCom sends for it
// (JoinScene 0, MemChangeList of their external_userids in the chat's
// dealer, member-list versions). It panics if the chat was dismissed.
func (s *Server) AddChatMembers(c Chat, members ...Person) wecom.Event {
	return s.changeChat(c, wecom.ChatAddMember, members)
}

// RemoveChatMembers removes people from a chat and returns the
// update/del_member event (QuitScene 0). It panics if the chat was dismissed.
func (s *Server) RemoveChatMembers(c Chat, members ...Person) wecom.Event {
	return s.changeChat(c, wecom.ChatDelMember, members)
}

func (s *Server) changeChat(c Chat, detail string, members []Person) wecom.Event {
	now := s.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.mustLiveChat(c)
	last := ch.version()
	ids := make([]string, 0, len(members))
	for _, p := range members {
		s.mustPerson(p)
		ids = append(ids, s.externalID(extKey{ch.Dealer.CorpID, p.UnionID}))
		if detail == wecom.ChatAddMember {
			if _, in := ch.members[p.UnionID]; !in {
				ch.members[p.UnionID] = now
			}
		} else {
			delete(ch.members, p.UnionID)
		}
	}
	ch.ver++
	ev := chatEvent(ch, wecom.ChatChangeUpdate, now)
	ev.UpdateDetail = detail
	ev.MemChangeCnt = fmt.Sprint(len(ids))
	ev.MemChangeList = ids
	ev.LastMemVer, ev.CurMemVer = last, ch.version()
	if detail == wecom.ChatAddMember {
		ev.JoinScene = "0"
	} else {
		ev.QuitScene = "0"
	}
	return ev
}

// CreateChatEvent returns the change_external_chat create event WeCom sends
// when c was created (AddGroupChat): after the header it carries only the
// ChatId (§3.2). CreateTime is the fake clock now, so create the event
// before moving the clock if the time matters. It does not change the world.
func (s *Server) CreateChatEvent(c Chat) wecom.Event {
	now := s.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	return chatEvent(s.mustChat(c), wecom.ChatChangeCreate, now)
}

// DismissChat dismisses c: its members leave, and lookups that name it
// (batch/external_userid_to_pending_id with its chat_id, groupchat/get)
// answer 40050 (invalid chat_id) as for an unknown chat. It returns the
// dismiss event, which carries only the ChatId (§3.2). It panics if c was
// already dismissed.
func (s *Server) DismissChat(c Chat) wecom.Event {
	now := s.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.mustLiveChat(c)
	ch.dismissed = true
	clear(ch.members)
	return chatEvent(ch, wecom.ChatChangeDismiss, now)
}

// ChatMembers returns the people currently in c, sorted by unionid: the
// ground truth of who is in the chat (none once it is dismissed).
func (s *Server) ChatMembers(c Chat) []Person {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.mustChat(c)
	out := make([]Person, 0, len(ch.members))
	for u := range ch.members {
		out = append(out, s.w.persons[u].Person)
	}
	slices.SortFunc(out, func(a, b Person) int { return strings.Compare(a.UnionID, b.UnionID) })
	return out
}

// chatEvent is the change_external_chat event of ch with only the header and
// ChatId filled in; update events add their member fields.
func chatEvent(ch *chat, changeType string, now time.Time) wecom.Event {
	return wecom.Event{
		ToUserName:   ch.Dealer.CorpID,
		FromUserName: "sys",
		CreateTime:   now.Unix(),
		MsgType:      "event",
		Event:        wecom.EventChangeExternalChat,
		ChatID:       ch.ID,
		ChangeType:   changeType,
	}
}

// version renders the member-list version as 32 hex digits, like WeCom's.
func (c *chat) version() string {
	sum := md5.Sum(fmt.Appendf(nil, "%s/%d", c.ID, c.ver)) //nolint:gosec // cosmetic
	return hex.EncodeToString(sum[:])
}

// ContactEvent returns the change_external_contact event WeCom sends for c
// with the given ChangeType (wecom.ChangeAddExternalContact, …): ToUserName
// is the dealer's corpid, UserID the staff, CreateTime the fake clock. Add
// events carry a fake WelcomeCode. It does not change the world: call
// AddCustomer or RemoveCustomer for that (TransferCustomer returns its own
// event).
func (s *Server) ContactEvent(c Customer, changeType string) wecom.Event {
	return contactEvent(c, changeType, s.Clock.Now())
}

func contactEvent(c Customer, changeType string, now time.Time) wecom.Event {
	ev := wecom.Event{
		ToUserName:     c.Dealer.CorpID,
		FromUserName:   "sys",
		CreateTime:     now.Unix(),
		MsgType:        "event",
		Event:          wecom.EventChangeExternalContact,
		ChangeType:     changeType,
		UserID:         c.Staff,
		ExternalUserID: c.ExternalUserID,
	}
	if changeType == wecom.ChangeAddExternalContact || changeType == wecom.ChangeAddHalfExternalContact {
		ev.WelcomeCode = "testwelcome-" + randomHex(8)
	}
	return ev
}

// ExternalUserID returns p's external_userid in d: the id WeCom would show
// d for p, whether or not p is (or was) d's customer or in one of d's chats.
// It is what AddCustomer returns and what chat events list.
func (s *Server) ExternalUserID(d Dealer, p Person) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	dl := s.mustDealer(d)
	s.mustPerson(p)
	return s.externalID(extKey{dl.CorpID, p.UnionID})
}

// PendingIDOf returns p's live pending_id (issued less than
// PendingIDLifetime ago on the fake clock), if any.
func (s *Server) PendingIDOf(p Person) (string, bool) {
	now := s.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ps, ok := s.w.persons[p.UnionID]
	if !ok {
		return "", false
	}
	return s.pendingID(ps, now, false)
}

// pendingID returns ps's live pending_id, issuing a new one when there is
// none and issue is set. s.mu must be held.
func (s *Server) pendingID(ps *person, now time.Time, issue bool) (string, bool) {
	if p, ok := livePending(ps, now); ok {
		return p.id, true
	}
	if !issue {
		return "", false
	}
	return s.issuePending(ps, now), true
}

// issuePending issues ps a new pending_id. s.mu must be held.
func (s *Server) issuePending(ps *person, now time.Time) string {
	id := fmt.Sprintf("ptest%s%06d", s.tag, s.w.next())
	ps.pending = append(ps.pending, issued{id: id, issuedAt: now})
	return id
}

// livePending returns ps's pending_id that is live at now, if any.
func livePending(ps *person, now time.Time) (issued, bool) {
	if n := len(ps.pending); n > 0 && now.Before(ps.pending[n-1].issuedAt.Add(PendingIDLifetime)) {
		return ps.pending[n-1], true
	}
	return issued{}, false
}

// lookupPendingID is the pending_id batch/external_userid_to_pending_id
// answers for k's person, under Server.PendingModel. ch is the chat the
// lookup names, or nil for a lookup of customers. The caller has checked
// that the relationship exists. s.mu must be held.
func (s *Server) lookupPendingID(k extKey, ch *chat, now time.Time) (string, bool) {
	ps := s.w.persons[k.unionID]
	if s.PendingModel != PendingRegisteredFirst {
		return s.pendingID(ps, now, s.PendingForUnregistered)
	}
	began := s.followStart(k)
	if ch != nil {
		began = ch.members[k.unionID]
	}
	p, ok := livePending(ps, now)
	if !ok || p.issuedAt.After(began) {
		return "", false
	}
	return p.id, true
}

// followStart is when the earliest still-active follow of k's person by
// k's dealer began: the relationship goes on while any staff follows.
// s.mu must be held.
func (s *Server) followStart(k extKey) time.Time {
	var first time.Time
	for _, start := range s.w.follows[k] {
		if first.IsZero() || start.Before(first) {
			first = start
		}
	}
	return first
}

// externalID returns the external_userid of k's person in k's dealer,
// creating it on first use. s.mu must be held.
func (s *Server) externalID(k extKey) string {
	if id, ok := s.w.ext[k]; ok {
		return id
	}
	id := fmt.Sprintf("wmtest%s%06d", s.tag, s.w.next())
	s.w.ext[k] = id
	s.w.extOwner[id] = k
	return id
}

// mustDealer returns this server's copy of d. s.mu must be held.
func (s *Server) mustDealer(d Dealer) Dealer {
	i, ok := s.w.byCorp[d.CorpID]
	if !ok {
		panic(fmt.Sprintf("wecomtest: unknown dealer %q (from another Server?)", d.CorpID))
	}
	return s.w.dealers[i]
}

// mustStaff panics unless staff is a member of d. s.mu must be held.
func (s *Server) mustStaff(what string, d Dealer, staff string) {
	if !slices.Contains(d.Staff, staff) {
		panic(fmt.Sprintf("wecomtest: %s: %q is not a staff member of dealer %s", what, staff, d.CorpID))
	}
}

// mustChat returns this server's chat c. s.mu must be held.
func (s *Server) mustChat(c Chat) *chat {
	ch, ok := s.w.chats[c.ID]
	if !ok {
		panic(fmt.Sprintf("wecomtest: unknown chat %s", c.ID))
	}
	return ch
}

// mustLiveChat is mustChat for a chat that was not dismissed. s.mu must be held.
func (s *Server) mustLiveChat(c Chat) *chat {
	ch := s.mustChat(c)
	if ch.dismissed {
		panic(fmt.Sprintf("wecomtest: chat %s is dismissed", c.ID))
	}
	return ch
}

// mustPerson panics unless p was added to this server. s.mu must be held.
func (s *Server) mustPerson(p Person) *person {
	ps, ok := s.w.persons[p.UnionID]
	if !ok || ps.OpenID != p.OpenID {
		panic(fmt.Sprintf("wecomtest: unknown person %q (from another Server?)", p.UnionID))
	}
	return ps
}

func cloneDealer(d Dealer) Dealer {
	d.Staff = slices.Clone(d.Staff)
	return d
}

// isCustomer reports whether k's person is a customer of k's dealer. s.mu must be held.
func (s *Server) isCustomer(k extKey) bool { return len(s.w.follows[k]) > 0 }
