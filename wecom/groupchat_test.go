package wecom_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

func TestClient_GroupChatMembers(t *testing.T) {
	t.Parallel()

	const chatAPI = wecom.APIGroupChatGet
	chatOK := func(_ http.ResponseWriter, req apiRequest) any {
		return ok("group_chat", map[string]any{
			"chat_id": req.Body["chat_id"], "name": "", "owner": "alice", "create_time": 1572505490,
			"member_list": []map[string]any{
				{"userid": "alice", "type": 1, "join_time": 1572505491, "join_scene": 1},
				{"userid": "wmtestA", "type": 2, "join_time": 1572505492, "join_scene": 3, "unionid": "test-u1"},
			},
		})
	}

	t.Run("UpstreamChatUsesTheUpstreamToken", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.handle(chatAPI, chatOK)

		got, err := tb.client.GroupChatMembers(t.Context(), testCorpID, "wrtestchat")
		require.NoError(t, err)
		require.Equal(t, []wecom.ChatMember{
			{UserID: "alice", Type: wecom.ChatMemberStaff, JoinTime: time.Unix(1572505491, 0).UTC()},
			{UserID: "wmtestA", Type: wecom.ChatMemberCustomer, JoinTime: time.Unix(1572505492, 0).UTC()},
		}, got)
		require.False(t, got[0].IsCustomer())
		require.True(t, got[1].IsCustomer())
		reqs := tb.requests(chatAPI)
		require.Len(t, reqs, 1)
		require.Equal(t, map[string]any{"chat_id": "wrtestchat", "need_name": float64(0)}, reqs[0].Body)
		require.Equal(t, "tok-1", reqs[0].Token)
		require.Equal(t, 0, tb.calls(wecom.APICorpGetToken))
	})

	// Ensure a downstream chat is read with that corp's token, whatever
	// Config.PendingToken says: only the owning corp may read it.
	t.Run("DownstreamChatUsesTheDownstreamToken", func(t *testing.T) {
		t.Parallel()
		tb := setup(t, func(c *wecom.Config) { c.DownstreamAgents = map[string]int64{"wwtestdown": 1001} })
		handleCorpToken(tb)
		tb.handle(chatAPI, chatOK)

		_, err := tb.client.GroupChatMembers(t.Context(), "wwtestdown", "wrtestchat")
		require.NoError(t, err)
		require.Equal(t, "down-wwtestdown-1001-1", tb.requests(chatAPI)[0].Token)
		require.Equal(t, map[string]any{"corpid": "wwtestdown", "business_type": float64(1), "agentid": float64(1001)},
			tb.requests(wecom.APICorpGetToken)[0].Body)
	})

	t.Run("SystemBusyRetried", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.handle(chatAPI, firstThen(1, always(wecom.CodeSystemBusy, "system busy"), chatOK))

		got, err := tb.client.GroupChatMembers(t.Context(), testCorpID, "wrtestchat")
		require.NoError(t, err)
		require.Len(t, got, 2)
		require.Equal(t, 2, tb.calls(chatAPI))
	})

	t.Run("InvalidChatIsPermanent", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.handle(chatAPI, always(40050, "invalid chatid"))

		_, err := tb.client.GroupChatMembers(t.Context(), testCorpID, "wrtestgone")
		var ae *wecom.APIError
		require.ErrorAs(t, err, &ae)
		require.Equal(t, wecom.APIError{API: chatAPI, Code: 40050, Msg: "invalid chatid"}, *ae)
		require.Equal(t, errClass{permanent: true}, classify(err))
		require.Equal(t, 1, tb.calls(chatAPI))
	})

	// Ensure a corp that stopped sharing the app has its looked-up agentid
	// forgotten, as for ExternalUserIDToPendingID, so the next call asks again.
	t.Run("AppNotSharedForgetsTheLookedUpAgent", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		handleCorpToken(tb)
		tb.answer(wecom.APIListAppShareInfo, "ending", 1, "corp_list", []map[string]any{{"corpid": "wwtestdown", "corp_name": "Dealer", "agentid": 2002}})
		tb.handle(chatAPI, always(wecom.CodeAppNotShared, "app not in share scope"))

		for range 2 {
			_, err := tb.client.GroupChatMembers(t.Context(), "wwtestdown", "wrtestchat")
			require.True(t, wecom.IsPermanent(err), "%v", err)
		}
		require.Equal(t, 2, tb.calls(wecom.APIListAppShareInfo))
	})

	t.Run("DownstreamCorpNotShared", func(t *testing.T) {
		t.Parallel()
		tb := setup(t)
		tb.answer(wecom.APIListAppShareInfo, "ending", 1, "corp_list", []any{})

		_, err := tb.client.GroupChatMembers(t.Context(), "wwtestgone", "wrtestchat")
		require.ErrorIs(t, err, wecom.ErrNotShared)
		require.Equal(t, 0, tb.calls(chatAPI))
	})

	for _, tt := range []struct{ name, corpID, chatID string }{
		{"EmptyCorpIDRefusedLocally", "", "wrtestchat"},
		{"EmptyChatIDRefusedLocally", testCorpID, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tb := setup(t)
			_, err := tb.client.GroupChatMembers(t.Context(), tt.corpID, tt.chatID)
			require.ErrorIs(t, err, wecom.ErrInvalidArgument)
			require.Equal(t, 0, tb.calls(wecom.APIGetToken)+tb.calls(chatAPI))
		})
	}
}

// The client against the fake WeCom: the chats of its world, read with
// each dealer's downstream token.
func TestClient_GroupChatMembersWecomtest(t *testing.T) {
	t.Parallel()

	start := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name string
		// story builds the world and returns the corp and chat to ask about,
		// and the members expected.
		story   func(srv *wecomtest.Server, clock *wecomtest.Clock) (corpID, chatID string, want []wecom.ChatMember)
		errcode int
		err     error
	}{
		{"OwnerThenMembersInJoinOrder", func(srv *wecomtest.Server, clock *wecomtest.Clock) (string, string, []wecom.ChatMember) {
			d := srv.AddDealer("A", "alice")
			p, q := srv.AddPerson(), srv.AddPerson()
			chat := srv.AddGroupChat(d, "alice", p)
			clock.Advance(time.Minute)
			srv.AddChatMembers(chat, q)
			return d.CorpID, chat.ID, []wecom.ChatMember{
				{UserID: "alice", Type: wecom.ChatMemberStaff, JoinTime: start},
				{UserID: srv.ExternalUserID(d, p), Type: wecom.ChatMemberCustomer, JoinTime: start},
				{UserID: srv.ExternalUserID(d, q), Type: wecom.ChatMemberCustomer, JoinTime: start.Add(time.Minute)},
			}
		}, 0, nil},
		{"LeftMembersGone", func(srv *wecomtest.Server, _ *wecomtest.Clock) (string, string, []wecom.ChatMember) {
			d := srv.AddDealer("A", "alice")
			p := srv.AddPerson()
			chat := srv.AddGroupChat(d, "alice", p)
			srv.RemoveChatMembers(chat, p)
			return d.CorpID, chat.ID, []wecom.ChatMember{{UserID: "alice", Type: wecom.ChatMemberStaff, JoinTime: start}}
		}, 0, nil},
		{"DismissedChat40050", func(srv *wecomtest.Server, _ *wecomtest.Clock) (string, string, []wecom.ChatMember) {
			d := srv.AddDealer("A")
			chat := srv.AddGroupChat(d, d.Staff[0], srv.AddPerson())
			srv.DismissChat(chat)
			return d.CorpID, chat.ID, nil
		}, 40050, nil},
		{"AnotherCorpsChat40050", func(srv *wecomtest.Server, _ *wecomtest.Clock) (string, string, []wecom.ChatMember) {
			d1, d2 := srv.AddDealer("A"), srv.AddDealer("B")
			return d1.CorpID, srv.AddGroupChat(d2, d2.Staff[0]).ID, nil
		}, 40050, nil},
		{"UnsharedCorp", func(srv *wecomtest.Server, _ *wecomtest.Clock) (string, string, []wecom.ChatMember) {
			return "wwtestnotadealer", "wrtestchat", nil
		}, 0, wecom.ErrNotShared},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := wecomtest.NewClock(start)
			srv := wecomtest.NewServer(wecomtest.WithClock(clock))
			t.Cleanup(srv.Close)
			corpID, chatID, want := tt.story(srv, clock)

			got, err := srv.Client().GroupChatMembers(t.Context(), corpID, chatID)
			switch {
			case tt.err != nil:
				require.ErrorIs(t, err, tt.err)
			case tt.errcode != 0:
				var ae *wecom.APIError
				require.ErrorAs(t, err, &ae)
				require.Equal(t, tt.errcode, ae.Code)
				require.True(t, wecom.IsPermanent(err))
			default:
				require.NoError(t, err)
				require.Equal(t, want, got)
				require.Equal(t, 1, srv.Calls(wecomtest.APIDownstreamGetToken), "read with the dealer's token")
			}
		})
	}
}
