package wecomtest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

func TestGroupChatGet(t *testing.T) {
	t.Parallel()

	// Ensure the owner is listed as staff (type 1) from the chat's creation,
	// and each person as a customer (type 2) under their external_userid in
	// the dealer, from when they joined on the fake clock.
	t.Run("OwnerAndMembersWithJoinTimes", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d := b.srv.AddDealer("A", "alice")
		p, q := b.srv.AddPerson(), b.srv.AddPerson()
		chat := b.srv.AddGroupChat(d, "alice", p)
		b.clock.Advance(time.Minute)
		b.srv.AddChatMembers(chat, q)

		r := groupChat(t, b.srv, mustToken(t, b.srv), chat.ID)
		require.Equal(t, 0, r.Errcode, r.Errmsg)
		require.Equal(t, chat.ID, r.GroupChat.ChatID)
		require.Equal(t, "alice", r.GroupChat.Owner)
		require.Equal(t, t0.Unix(), r.GroupChat.CreateTime)
		require.Equal(t, []member{
			{"alice", 1, t0.Unix()},
			{b.srv.ExternalUserID(d, p), 2, t0.Unix()},
			{b.srv.ExternalUserID(d, q), 2, t0.Add(time.Minute).Unix()},
		}, r.members())
	})

	t.Run("LeftMembersNotListedAndRejoinIsANewJoin", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d := b.srv.AddDealer("A", "alice")
		p, q := b.srv.AddPerson(), b.srv.AddPerson()
		chat := b.srv.AddGroupChat(d, "alice", p, q)
		b.srv.RemoveChatMembers(chat, q)
		b.clock.Advance(time.Hour)
		b.srv.RemoveChatMembers(chat, p)
		b.srv.AddChatMembers(chat, p)

		r := groupChat(t, b.srv, mustToken(t, b.srv), chat.ID)
		require.Equal(t, []member{
			{"alice", 1, t0.Unix()},
			{b.srv.ExternalUserID(d, p), 2, t0.Add(time.Hour).Unix()},
		}, r.members())
	})

	t.Run("AddingAMemberAgainKeepsTheJoinTime", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d := b.srv.AddDealer("A", "alice")
		p := b.srv.AddPerson()
		chat := b.srv.AddGroupChat(d, "alice", p)
		b.clock.Advance(time.Hour)
		b.srv.AddChatMembers(chat, p)

		r := groupChat(t, b.srv, mustToken(t, b.srv), chat.ID)
		require.Equal(t, []member{{"alice", 1, t0.Unix()}, {b.srv.ExternalUserID(d, p), 2, t0.Unix()}}, r.members())
	})

	t.Run("DownstreamTokenSeesOnlyItsOwnCorpsChats", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		d1, d2 := b.srv.AddDealer("A"), b.srv.AddDealer("B")
		own, other := b.srv.AddGroupChat(d1, d1.Staff[0]), b.srv.AddGroupChat(d2, d2.Staff[0])
		down := mustDownstreamToken(t, b.srv, d1)

		require.Equal(t, 0, groupChat(t, b.srv, down, own.ID).Errcode)
		require.Equal(t, 40050, groupChat(t, b.srv, down, other.ID).Errcode)
		require.Equal(t, 0, groupChat(t, b.srv, mustToken(t, b.srv), other.ID).Errcode, "the upstream token sees every chat")
	})

	for _, tc := range []struct {
		name string
		body any
		code int
	}{
		{"ErrUnknownChat40050", map[string]any{"chat_id": "wrtest-nosuchchat"}, 40050},
		{"ErrMissingChatID40058", map[string]any{"need_name": 0}, 40058},
		{"ErrNotJSON47001", "chat_id=wr", 47001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			r := post[groupChatResp](t, b.srv, wecomtest.APIGroupChatGet, mustToken(t, b.srv), tc.body)
			require.Equal(t, tc.code, r.Errcode)
			require.Empty(t, r.GroupChat.MemberList)
		})
	}
}
