package wecomtest

import (
	"crypto/md5" //nolint:gosec // only to make member-list versions look like WeCom's
	"encoding/hex"
	"fmt"
	"slices"
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
	members map[string]bool // unionids
	ver     int
}

type world struct {
	dealers  []Dealer
	byCorp   map[string]int // corpid → index in dealers
	persons  map[string]*person
	ext      map[extKey]string          // (dealer, person) → external_userid
	extOwner map[string]extKey          // external_userid → (dealer, person)
	follows  map[extKey]map[string]bool // staff following the customer; none = not a customer
	chats    map[string]*chat
	n        int // id counter shared by every kind of id
}

func newWorld() world {
	return world{
		byCorp:   map[string]int{},
		persons:  map[string]*person{},
		ext:      map[extKey]string{},
		extOwner: map[string]extKey{},
		follows:  map[extKey]map[string]bool{},
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
// relationship. It panics if d, p or staff is unknown to this server.
func (s *Server) AddCustomer(d Dealer, p Person, staff string) Customer {
	s.mu.Lock()
	defer s.mu.Unlock()
	dl := s.mustDealer(d)
	s.mustPerson(p)
	if !slices.Contains(dl.Staff, staff) {
		panic(fmt.Sprintf("wecomtest: AddCustomer: %q is not a staff member of dealer %s", staff, d.CorpID))
	}
	k := extKey{dl.CorpID, p.UnionID}
	if s.w.follows[k] == nil {
		s.w.follows[k] = map[string]bool{}
	}
	s.w.follows[k][staff] = true
	return Customer{Dealer: cloneDealer(dl), Person: p, Staff: staff, ExternalUserID: s.externalID(k)}
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
// given people as members. Members get external_userids in d (the same
// ones AddCustomer gives) without becoming customers.
func (s *Server) AddGroupChat(d Dealer, owner string, members ...Person) Chat {
	s.mu.Lock()
	defer s.mu.Unlock()
	dl := s.mustDealer(d)
	if !slices.Contains(dl.Staff, owner) {
		panic(fmt.Sprintf("wecomtest: AddGroupChat: %q is not a staff member of dealer %s", owner, d.CorpID))
	}
	c := &chat{
		Chat:    Chat{ID: fmt.Sprintf("wrtest%s%06d", s.tag, s.w.next()), Dealer: cloneDealer(dl), Owner: owner},
		members: map[string]bool{},
	}
	for _, p := range members {
		s.mustPerson(p)
		s.externalID(extKey{dl.CorpID, p.UnionID})
		c.members[p.UnionID] = true
	}
	s.w.chats[c.ID] = c
	ch := c.Chat
	ch.Dealer = cloneDealer(ch.Dealer)
	return ch
}

// AddChatMembers adds people to a chat and returns the change_external_chat
// update/add_member event WeCom sends for it (JoinScene 0, MemChangeList of
// their external_userids in the chat's dealer, member-list versions).
func (s *Server) AddChatMembers(c Chat, members ...Person) wecom.Event {
	return s.changeChat(c, wecom.ChatAddMember, members)
}

// RemoveChatMembers removes people from a chat and returns the
// update/del_member event (QuitScene 0).
func (s *Server) RemoveChatMembers(c Chat, members ...Person) wecom.Event {
	return s.changeChat(c, wecom.ChatDelMember, members)
}

func (s *Server) changeChat(c Chat, detail string, members []Person) wecom.Event {
	now := s.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.w.chats[c.ID]
	if !ok {
		panic(fmt.Sprintf("wecomtest: unknown chat %s", c.ID))
	}
	last := ch.version()
	ids := make([]string, 0, len(members))
	for _, p := range members {
		s.mustPerson(p)
		ids = append(ids, s.externalID(extKey{ch.Dealer.CorpID, p.UnionID}))
		if detail == wecom.ChatAddMember {
			ch.members[p.UnionID] = true
		} else {
			delete(ch.members, p.UnionID)
		}
	}
	ch.ver++
	ev := wecom.Event{
		ToUserName:    ch.Dealer.CorpID,
		FromUserName:  "sys",
		CreateTime:    now.Unix(),
		MsgType:       "event",
		Event:         wecom.EventChangeExternalChat,
		ChatID:        ch.ID,
		ChangeType:    wecom.ChatChangeUpdate,
		UpdateDetail:  detail,
		MemChangeCnt:  fmt.Sprint(len(ids)),
		MemChangeList: ids,
		LastMemVer:    last,
		CurMemVer:     ch.version(),
	}
	if detail == wecom.ChatAddMember {
		ev.JoinScene = "0"
	} else {
		ev.QuitScene = "0"
	}
	return ev
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
// AddCustomer or RemoveCustomer for that.
func (s *Server) ContactEvent(c Customer, changeType string) wecom.Event {
	ev := wecom.Event{
		ToUserName:     c.Dealer.CorpID,
		FromUserName:   "sys",
		CreateTime:     s.Clock.Now().Unix(),
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
	if n := len(ps.pending); n > 0 && now.Before(ps.pending[n-1].issuedAt.Add(PendingIDLifetime)) {
		return ps.pending[n-1].id, true
	}
	if !issue {
		return "", false
	}
	id := fmt.Sprintf("ptest%s%06d", s.tag, s.w.next())
	ps.pending = append(ps.pending, issued{id: id, issuedAt: now})
	return id, true
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
