// Package wecomtest provides a fake WeCom for tests, benchmarks and the demo,
// in the manner of net/http/httptest: a real HTTP server on the loopback
// interface that serves the APIs pendinglink calls, and a Sender that
// delivers encrypted callbacks the way WeCom does.
//
// # Start a fake
//
//	srv := wecomtest.NewServer()  // started on 127.0.0.1:0
//	defer srv.Close()             // waits for calls in flight and callback retries
//	client := srv.Client()        // a ready *wecom.Client using srv.Clock
//
// NewUnstartedServer lets a test set fields (Clock, quotas,
// PendingForUnregistered, PendingModel, Listener) before Start. It takes no testing.TB,
// because the demo runs the same fake.
//
// # Build a world
//
// The fake holds one upstream (brand) corp with its shared app, and a world
// of downstream dealers, people and the relationships between them. Ids look
// fake on purpose: corps "wwtest…", unionids "test-u…", openids "test-o…",
// external_userids "wmtest…", pending_ids "ptest…", chats "wrtest…",
// tokens "testtoken-…".
//
//	dealer := srv.AddDealer("Dealer A")              // shares the app
//	fan := srv.AddPerson()                           // a WeChat user with unionid and openid
//	cust := srv.AddCustomer(dealer, fan, dealer.Staff[0])
//	ev := srv.ContactEvent(cust, wecom.ChangeAddExternalContact)
//
// A person is "registered" once unionid_to_pending_id has issued them a
// pending_id; PendingIDOf reports it for assertions.
//
// The world changes the way WeCom's does, and each change that WeCom
// reports returns (or has) the event it sends:
//
//	moved, ev := srv.TransferCustomer(cust, "bob")           // 在职继承: del_external_contact, Source DELETE_BY_TRANSFER
//	ev = srv.TransferFailEvent(cust, "bob", "customer_refused") // transfer_fail; nothing changes
//	srv.RemoveCustomer(moved)                                  // then ContactEvent(moved, wecom.ChangeDelFollowUser)
//	chat := srv.AddGroupChat(dealer, "alice", fan)             // then CreateChatEvent(chat)
//	ev = srv.AddChatMembers(chat, other)                       // update/add_member; RemoveChatMembers: del_member
//	ev = srv.DismissChat(chat)                                 // dismiss; the chat's members leave
//
// The world remembers when each follow began and when each member joined a
// chat, on the fake Clock. Follows and ChatMembers report who follows whom
// and who is in a chat now, as ground truth for assertions.
//
// # Deliver callbacks
//
//	sender := srv.Sender(callbackURL, token, encodingAESKey)
//	res, err := sender.Send(ctx, ev)  // encrypt, sign, POST, retry on non-200
//	err = sender.Verify(ctx)          // the GET URL-verification handshake
//
// # Observe and break it
//
// Calls, Errcodes, Stats and Wait expose what the fake saw; Wait replaces
// sleeping in tests. Faults (latency, -1 answers, 5xx, dropped connections,
// early token expiry, an egress IP not on the trusted list) are data set
// with SetFaults at any time; FailNext scripts the next answers of one API
// (a scripted 60020 without Msg names the caller's IP, as WeCom's does).
// Set-up faults come from the world itself: a wrong corp id or secret in
// the client's config gets 40013 or 40001, and a fake with no dealer
// answers list_app_share_info with an empty corp_list. The Clock moves only when told to,
// and drives token expiry, pending_id expiry and quota windows.
//
// # What the fake answers
//
// It follows the protocol reference (§4, §5). Where the reference leaves the
// behaviour open, the fake picks one and documents it here:
//
//   - Every API: access_token missing 41001, unknown 40014, expired on the
//     fake clock 42001; a body that is not the expected JSON 47001; a
//     downstream token on an upstream-only API 48002; wrong HTTP method 405,
//     unknown path 404. Errors are HTTP 200 with errcode/errmsg, like WeCom.
//   - gettoken (GET): corpid missing 41002, corpsecret missing 41004, wrong
//     corp 40013, wrong secret 40001. Every call issues a new random token;
//     older ones stay valid until they expire. expires_in is always 7200.
//   - corpgroup/corp/gettoken: business_type other than 1 40058; a corp that
//     is not a dealer 670001 (app not in share scope); an agentid other than
//     the dealer's 301002. The downstream token is accepted only by
//     batch/external_userid_to_pending_id and externalcontact/groupchat/get,
//     and there only sees its own corp's external_userids and chats.
//   - corpgroup/corp/list_app_share_info: business_type other than 1 40058;
//     an agentid other than the upstream app's 301002; limit outside 0..100
//     or a cursor the fake did not issue 40058. limit 0 means all.
//   - corpgroup/unionid_to_pending_id: unionid or openid missing 40058;
//     unknown unionid, or an openid that is not that person's, 610014. The
//     same person gets the same pending_id while it is live; once
//     PendingIDLifetime (90 days) has passed on the fake clock, the next
//     registration issues a new one and the old one is never returned again.
//   - corpgroup/batch/external_userid_to_pending_id: 0 or more than 100 ids
//     40058; an unknown chat_id (or another corp's, with a downstream token)
//     40050. Ids without an answer are omitted from result, never returned
//     empty: unknown ids, ids whose follow relationship ended
//     (RemoveCustomer), ids of people met only in a group chat unless
//     chat_id names that chat, ids not in the given chat, and people without
//     a live pending_id (see Server.PendingForUnregistered), and, under
//     PendingRegisteredFirst, people whose live pending_id was issued after
//     the relationship looked up began (see Server.PendingModel). A
//     dismissed chat is unknown (40050). Duplicate ids are answered once.
//   - corpgroup/unionid_to_external_userid: validation as for
//     unionid_to_pending_id; returns one entry per dealer, in the order the
//     dealers were added, where the person is currently a customer; the
//     optional corpid filters.
//   - externalcontact/groupchat/get (not in the protocol reference; doc
//     92122): chat_id missing 40058; an unknown or dismissed chat, or
//     another corp's with a downstream token, 40050. The upstream token
//     reads every dealer's chats (WeCom would want the dealer's token; the
//     client sends it). member_list is the owner (type 1, joined when the
//     chat was created), then the people in the chat (type 2, userid = their
//     external_userid in the chat's dealer) in the order they joined, with
//     join_time from the fake clock and join_scene 1; no unionid, and name
//     is always "".
//   - Quotas (45009): see Quota. They count calls with a valid token, so a
//     45009, a fault or a bad token does not consume quota.
package wecomtest
