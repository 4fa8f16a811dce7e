package wecom_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/wecom"
)

// The official examples of the protocol reference §3.1 and §3.2.
const (
	officialAdd = `<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1403610513</CreateTime>
  <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event>
  <ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID>
  <ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mAAAA]]></ExternalUserID>
  <State><![CDATA[teststate]]></State><WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode></xml>`
	officialChat = `<xml><ToUserName><![CDATA[ww55ca070cb9b7eb22]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>
  <CreateTime>1403610513</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_chat]]></Event>
  <ChatId><![CDATA[wrx7HUARsKwGRaQBVKPBTcEyzdHA4HrQ]]></ChatId><ChangeType><![CDATA[update]]></ChangeType>
  <UpdateDetail><![CDATA[add_member]]></UpdateDetail><JoinScene>1</JoinScene><QuitScene>0</QuitScene>
  <MemChangeCnt>10</MemChangeCnt><MemChangeList><Item>Jack</Item><Item>Rose</Item></MemChangeList>
  <LastMemVer>9c3f97c2ada667dfb5f6d03308d963e1</LastMemVer><CurMemVer>71217227bbd112ecfe3a49c482195cb4</CurMemVer></xml>`
)

// Events built from the field tables of §3.1 and §3.2 (no official example
// shows them).
const (
	transferDel = `<xml><ToUserName><![CDATA[wwtestdealer]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700000000</CreateTime>
  <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event>
  <ChangeType><![CDATA[del_external_contact]]></ChangeType><UserID><![CDATA[alice]]></UserID>
  <ExternalUserID><![CDATA[wmtestA]]></ExternalUserID><Source><![CDATA[DELETE_BY_TRANSFER]]></Source></xml>`
	transferFail = `<xml><ToUserName><![CDATA[wwtestdealer]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700000000</CreateTime>
  <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event>
  <ChangeType><![CDATA[transfer_fail]]></ChangeType><UserID><![CDATA[bob]]></UserID>
  <ExternalUserID><![CDATA[wmtestA]]></ExternalUserID><FailReason><![CDATA[customer_refused]]></FailReason></xml>`
	chatCreate = `<xml><ToUserName><![CDATA[wwtestdealer]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700000000</CreateTime>
  <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_chat]]></Event>
  <ChatId><![CDATA[wrtestchat]]></ChatId><ChangeType><![CDATA[create]]></ChangeType></xml>`
)

func TestParseEvent(t *testing.T) {
	t.Parallel()

	t.Run("OfficialAdd", func(t *testing.T) {
		t.Parallel()
		ev := mustParseKind(t, officialAdd, wecom.KindAddExternalContact)
		require.Equal(t, "toUser", ev.ToUserName)
		require.Equal(t, "zhangsan", ev.UserID)
		require.Equal(t, "woAJ2GCAAAXtWyujaWJHDDGi0mAAAA", ev.ExternalUserID)
		require.EqualValues(t, 1403610513, ev.CreateTime)
		require.Equal(t, "teststate", ev.State)
	})

	t.Run("OfficialChatItems", func(t *testing.T) {
		t.Parallel()
		ev := mustParseKind(t, officialChat, wecom.KindChatAddMember)
		require.Equal(t, wecom.MemList{"Jack", "Rose"}, ev.MemChangeList)
		require.Equal(t, "wrx7HUARsKwGRaQBVKPBTcEyzdHA4HrQ", ev.ChatID)
		require.Equal(t, "1", ev.JoinScene, "JoinScene is not checked against an enum")
	})

	t.Run("OldCommaSeparatedList", func(t *testing.T) {
		t.Parallel()
		ev := mustParse(t, `<xml><Event>change_external_chat</Event><ChangeType>update</ChangeType><UpdateDetail>del_member</UpdateDetail><MemChangeList><![CDATA[id1, id2,,id3]]></MemChangeList></xml>`)
		require.Equal(t, wecom.KindChatDelMember, ev.Kind())
		require.Equal(t, wecom.MemList{"id1", "id2", "id3"}, ev.MemChangeList)
	})

	t.Run("RepeatedListElementsAppend", func(t *testing.T) {
		t.Parallel()
		ev := mustParse(t, `<xml><MemChangeList>a</MemChangeList><MemChangeList><Item>b</Item></MemChangeList></xml>`)
		require.Equal(t, wecom.MemList{"a", "b"}, ev.MemChangeList)
	})

	t.Run("TransferDeleteHasSource", func(t *testing.T) {
		t.Parallel()
		ev := mustParseKind(t, transferDel, wecom.KindDelExternalContact)
		require.Equal(t, wecom.SourceDeleteByTransfer, ev.Source)
		require.Equal(t, "alice", ev.UserID)
	})

	t.Run("TransferFailHasReason", func(t *testing.T) {
		t.Parallel()
		ev := mustParseKind(t, transferFail, wecom.KindTransferFail)
		require.Equal(t, "customer_refused", ev.FailReason)
		require.Equal(t, "bob", ev.UserID)
	})

	t.Run("ChatCreateCarriesOnlyChatID", func(t *testing.T) {
		t.Parallel()
		ev := mustParseKind(t, chatCreate, wecom.KindChatCreate)
		require.Equal(t, "wrtestchat", ev.ChatID)
		require.Empty(t, ev.UpdateDetail)
		require.Empty(t, ev.MemChangeList)
	})

	t.Run("ErrUnparsable", func(t *testing.T) {
		t.Parallel()
		_, err := wecom.ParseEvent([]byte("<xml><ToUserName>"))
		require.Error(t, err)
	})
}

// mustParse parses raw, which must be a valid event.
// mustParseKind parses raw and requires the event to be of kind.
func mustParseKind(t *testing.T, raw, kind string) wecom.Event {
	t.Helper()
	ev := mustParse(t, raw)
	require.Equal(t, kind, ev.Kind())
	return ev
}

func mustParse(t *testing.T, raw string) wecom.Event {
	t.Helper()
	ev, err := wecom.ParseEvent([]byte(raw))
	require.NoError(t, err)
	return ev
}

func TestEvent_Kind(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ev   wecom.Event
		want string
	}{
		{wecom.Event{Event: "change_external_contact", ChangeType: "add_half_external_contact"}, wecom.KindAddHalfExternalContact},
		{wecom.Event{Event: "change_external_contact", ChangeType: "del_follow_user"}, wecom.KindDelFollowUser},
		{wecom.Event{Event: "change_external_contact", ChangeType: "transfer_fail"}, wecom.KindTransferFail},
		{wecom.Event{Event: "change_external_contact", ChangeType: "msg_audit_approved"}, wecom.KindIgnored},
		{wecom.Event{Event: "change_external_chat", ChangeType: "update", UpdateDetail: "change_name"}, wecom.KindIgnored},
		{wecom.Event{Event: "change_external_chat", ChangeType: "create", ChatID: "wr"}, wecom.KindChatCreate},
		{wecom.Event{Event: "change_external_chat", ChangeType: "dismiss", ChatID: "wr"}, wecom.KindChatDismiss},
		{wecom.Event{Event: "change_external_chat", ChangeType: "some_future_change"}, wecom.KindIgnored},
		{wecom.Event{Event: "change_external_contact", ChangeType: "create"}, wecom.KindIgnored},
		{wecom.Event{Event: "change_external_tag"}, wecom.KindIgnored},
	} {
		require.Equal(t, tc.want, tc.ev.Kind(), "%+v", tc.ev)
	}
}

func TestEvent_DedupKey(t *testing.T) {
	t.Parallel()
	base := mustParse(t, officialAdd)
	key := base.DedupKey([]byte(officialAdd))

	same := base
	same.WelcomeCode = "another" // not part of the identity
	require.Equal(t, key, same.DedupKey(nil))

	for name, mutate := range map[string]func(*wecom.Event){
		"Corp":     func(e *wecom.Event) { e.ToUserName = "other" },
		"Customer": func(e *wecom.Event) { e.ExternalUserID = "other" },
		"Staff":    func(e *wecom.Event) { e.UserID = "other" },
		"Time":     func(e *wecom.Event) { e.CreateTime++ },
		"Change":   func(e *wecom.Event) { e.ChangeType = wecom.ChangeAddHalfExternalContact },
	} {
		ev := base
		mutate(&ev)
		require.NotEqual(t, key, ev.DedupKey(nil), name)
	}

	chat := mustParse(t, officialChat)
	other := chat
	other.MemChangeList = wecom.MemList{"Jack"}
	require.NotEqual(t, chat.DedupKey(nil), other.DedupKey(nil), "member list is part of a chat event's key")

	create := wecom.Event{ToUserName: "ww", FromUserName: "sys", CreateTime: 1700000000, MsgType: "event",
		Event: wecom.EventChangeExternalChat, ChatID: "wr", ChangeType: wecom.ChatChangeCreate}
	dismiss := create
	dismiss.ChangeType = wecom.ChatChangeDismiss
	require.NotEqual(t, create.DedupKey(nil), dismiss.DedupKey(nil), "create and dismiss of one chat in the same second")
	otherChat := create
	otherChat.ChatID = "wr2"
	require.NotEqual(t, create.DedupKey(nil), otherChat.DedupKey(nil), "create of two chats in the same second")

	transfer := base
	transfer.ChangeType, transfer.WelcomeCode, transfer.State = wecom.ChangeDelExternalContact, "", ""
	transfer.Source = wecom.SourceDeleteByTransfer
	require.NotEqual(t, key, transfer.DedupKey(nil), "a transfer's delete is not the add")

	ignored := wecom.Event{Event: "change_external_tag"}
	require.NotEqual(t, ignored.DedupKey([]byte("a")), ignored.DedupKey([]byte("b")), "ignored events key on their plaintext")
}

func TestEvent_DedupKeyCannotCollide(t *testing.T) {
	t.Parallel()
	// Ensure distinct events that a separator-joined key would merge get distinct keys.
	a := wecom.Event{ToUserName: "ww", Event: wecom.EventChangeExternalContact, ChangeType: wecom.ChangeAddExternalContact,
		UserID: "a|b", ExternalUserID: "c", CreateTime: 1700000000}
	b := a
	b.UserID, b.ExternalUserID = "a", "b|c"
	require.NotEqual(t, a.DedupKey(nil), b.DedupKey(nil))

	chat := wecom.Event{ToUserName: "ww", Event: wecom.EventChangeExternalChat, ChangeType: wecom.ChatChangeUpdate,
		UpdateDetail: wecom.ChatAddMember, ChatID: "wr", MemChangeList: wecom.MemList{"x,y"}}
	split := chat
	split.MemChangeList = wecom.MemList{"x", "y"}
	require.NotEqual(t, chat.DedupKey(nil), split.DedupKey(nil), "member boundaries are part of the key")

	// A retry (same decrypted fields, fresh ciphertext) keeps its key, which
	// has a fixed size however large the event.
	retry := a
	retry.WelcomeCode = "fresh"
	require.Equal(t, a.DedupKey(nil), retry.DedupKey(nil))
	big := chat
	big.MemChangeList = make(wecom.MemList, 2000)
	for i := range big.MemChangeList {
		big.MemChangeList[i] = strings.Repeat("m", 32)
	}
	require.Len(t, big.DedupKey(nil), len(a.DedupKey(nil)))
	require.True(t, strings.HasPrefix(a.DedupKey(nil), "v2|"), "versioned, so it never equals a key of the old format")
}

func TestEvent_MarshalRoundTrip(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{officialAdd, officialChat, transferDel, transferFail, chatCreate} {
		ev := mustParse(t, raw)
		out, err := ev.Marshal()
		require.NoError(t, err)
		back, err := wecom.ParseEvent(out)
		require.NoError(t, err)
		require.Equal(t, ev, back)
	}
}
