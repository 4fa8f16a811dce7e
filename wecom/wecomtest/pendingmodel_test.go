package wecomtest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// modelWorld is one dealer with two staff, one person and an upstream token.
type modelWorld struct {
	testBundle
	tok string
	d   wecomtest.Dealer
	p   wecomtest.Person
}

// register registers w.p, a minute after the last step.
func (w modelWorld) register(t *testing.T) {
	t.Helper()
	w.clock.Advance(time.Minute)
	mustRegister(t, w.srv, w.tok, w.p)
}

// add makes staff add w.p, a minute after the last step.
func (w modelWorld) add(staff string) wecomtest.Customer {
	w.clock.Advance(time.Minute)
	return w.srv.AddCustomer(w.d, w.p, staff)
}

func TestExternalUserIDToPendingID_PendingModel(t *testing.T) {
	t.Parallel()

	// Each story builds a relationship and returns the chat_id to look up
	// with ("" for customers). want says whether each model answers p's
	// pending_id for it.
	for _, tc := range []struct {
		name  string
		story func(t *testing.T, w modelWorld) (chatID string)
		want  map[wecomtest.PendingModel]bool
	}{
		{"RegisteredBeforeAdd", func(t *testing.T, w modelWorld) string {
			w.register(t)
			w.add("alice")
			return ""
		}, map[wecomtest.PendingModel]bool{wecomtest.PendingWhenRegistered: true, wecomtest.PendingRegisteredFirst: true}},
		{"RegisteredAtTheAddsInstant", func(t *testing.T, w modelWorld) string {
			w.register(t)
			w.srv.AddCustomer(w.d, w.p, "alice")
			return ""
		}, map[wecomtest.PendingModel]bool{wecomtest.PendingWhenRegistered: true, wecomtest.PendingRegisteredFirst: true}},
		{"RegisteredAfterAdd", func(t *testing.T, w modelWorld) string {
			w.add("alice")
			w.register(t)
			return ""
		}, map[wecomtest.PendingModel]bool{wecomtest.PendingWhenRegistered: true, wecomtest.PendingRegisteredFirst: false}},
		{"ReAddAfterRegistration", func(t *testing.T, w modelWorld) string {
			c := w.add("alice")
			w.register(t)
			w.srv.RemoveCustomer(c)
			w.add("alice")
			return ""
		}, map[wecomtest.PendingModel]bool{wecomtest.PendingWhenRegistered: true, wecomtest.PendingRegisteredFirst: true}},
		// The relationship with the dealer began with bob's add and never ended.
		{"AddByColleagueWhileAnEarlierFollowGoesOn", func(t *testing.T, w modelWorld) string {
			w.add("bob")
			w.register(t)
			w.add("alice")
			return ""
		}, map[wecomtest.PendingModel]bool{wecomtest.PendingWhenRegistered: true, wecomtest.PendingRegisteredFirst: false}},
		{"TransferKeepsTheStart", func(t *testing.T, w modelWorld) string {
			c := w.add("alice")
			w.register(t)
			w.clock.Advance(time.Minute)
			w.srv.TransferCustomer(c, "bob")
			return ""
		}, map[wecomtest.PendingModel]bool{wecomtest.PendingWhenRegistered: true, wecomtest.PendingRegisteredFirst: false}},
		{"JoinedChatAfterRegistration", func(t *testing.T, w modelWorld) string {
			w.register(t)
			w.clock.Advance(time.Minute)
			return w.srv.AddGroupChat(w.d, "alice", w.p).ID
		}, map[wecomtest.PendingModel]bool{wecomtest.PendingWhenRegistered: true, wecomtest.PendingRegisteredFirst: true}},
		{"RegisteredAfterJoiningChat", func(t *testing.T, w modelWorld) string {
			chat := w.srv.AddGroupChat(w.d, "alice", w.p)
			w.register(t)
			return chat.ID
		}, map[wecomtest.PendingModel]bool{wecomtest.PendingWhenRegistered: true, wecomtest.PendingRegisteredFirst: false}},
		{"RejoinedChatAfterRegistration", func(t *testing.T, w modelWorld) string {
			chat := w.srv.AddGroupChat(w.d, "alice", w.p)
			w.register(t)
			w.srv.RemoveChatMembers(chat, w.p)
			w.clock.Advance(time.Minute)
			w.srv.AddChatMembers(chat, w.p)
			return chat.ID
		}, map[wecomtest.PendingModel]bool{wecomtest.PendingWhenRegistered: true, wecomtest.PendingRegisteredFirst: true}},
		// A chat lookup goes by the join, not by an earlier follow.
		{"CustomerJoinsChatAfterRegistration", func(t *testing.T, w modelWorld) string {
			w.add("alice")
			w.register(t)
			w.clock.Advance(time.Minute)
			return w.srv.AddGroupChat(w.d, "alice", w.p).ID
		}, map[wecomtest.PendingModel]bool{wecomtest.PendingWhenRegistered: true, wecomtest.PendingRegisteredFirst: true}},
	} {
		for _, model := range []wecomtest.PendingModel{wecomtest.PendingWhenRegistered, wecomtest.PendingRegisteredFirst} {
			t.Run(tc.name+"/"+model.String(), func(t *testing.T) {
				t.Parallel()
				w := modelWorld{testBundle: setup(t, wecomtest.WithPendingModel(model))}
				w.tok = mustToken(t, w.srv)
				w.d = w.srv.AddDealer("A", "alice", "bob")
				w.p = w.srv.AddPerson()
				chatID := tc.story(t, w)

				id := w.srv.ExternalUserID(w.d, w.p)
				got := mustBatch(t, w.srv, mustToken(t, w.srv), chatID, id)
				if tc.want[model] {
					pid, ok := w.srv.PendingIDOf(w.p)
					require.True(t, ok)
					require.Equal(t, map[string]string{id: pid}, got)
				} else {
					require.Empty(t, got)
				}
			})
		}
	}

	t.Run("RegisteredFirstIgnoresPendingForUnregistered", func(t *testing.T) {
		t.Parallel()
		s := setupScene(t, wecomtest.WithPendingModel(wecomtest.PendingRegisteredFirst), wecomtest.WithPendingForUnregistered(true))
		require.Empty(t, mustBatch(t, s.srv, s.tok, "", s.c.ExternalUserID))
		_, ok := s.srv.PendingIDOf(s.p)
		require.False(t, ok, "no pending_id was issued by the lookup")
	})

	t.Run("UnknownModelPanicsAtStart", func(t *testing.T) {
		t.Parallel()
		srv := wecomtest.NewUnstartedServer(wecomtest.WithPendingModel(7))
		require.PanicsWithValue(t, "wecomtest: unknown Server.PendingModel PendingModel(7)", srv.Start)
	})

	t.Run("DefaultIsWhenRegistered", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, wecomtest.PendingWhenRegistered, wecomtest.NewUnstartedServer().PendingModel)
	})
}
