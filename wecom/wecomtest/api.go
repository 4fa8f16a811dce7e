package wecomtest

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// getToken serves gettoken (§4.1).
func (s *Server) getToken(r *http.Request, _ []byte, now time.Time) (map[string]any, int) {
	q := r.URL.Query()
	corpID, secret := q.Get("corpid"), q.Get("corpsecret")
	switch {
	case corpID == "":
		return nil, codeCorpIDMissing
	case secret == "":
		return nil, codeSecretMissing
	case corpID != s.CorpID:
		return nil, codeInvalidCorpID
	case subtle.ConstantTimeCompare([]byte(secret), []byte(s.CorpSecret)) != 1:
		return nil, codeInvalidSecret
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tok := s.issueToken(s.CorpID, s.AgentID, false, now)
	return map[string]any{"access_token": tok, "expires_in": int(tokenExpiresIn / time.Second)}, 0
}

// downstreamGetToken serves corpgroup/corp/gettoken (§4.2).
func (s *Server) downstreamGetToken(_ token, body []byte, now time.Time) (map[string]any, int) {
	var req struct {
		CorpID       string `json:"corpid"`
		BusinessType int    `json:"business_type"`
		AgentID      int64  `json:"agentid"`
	}
	if json.Unmarshal(body, &req) != nil {
		return nil, codeDataFormat
	}
	switch {
	case req.BusinessType != 1:
		return nil, codeInvalidParameter
	case req.CorpID == "":
		return nil, codeCorpIDMissing
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.w.byCorp[req.CorpID]
	if !ok {
		return nil, codeAppNotInShareScope
	}
	d := s.w.dealers[i]
	if req.AgentID != d.AgentID {
		return nil, codeNoAgentPrivilege
	}
	tok := s.issueToken(d.CorpID, d.AgentID, true, now)
	return map[string]any{"access_token": tok, "expires_in": int(tokenExpiresIn / time.Second)}, 0
}

const cursorPrefix = "testcursor-"

// listAppShareInfo serves corpgroup/corp/list_app_share_info (§4.3).
func (s *Server) listAppShareInfo(_ token, body []byte, _ time.Time) (map[string]any, int) {
	var req struct {
		AgentID      int64  `json:"agentid"`
		BusinessType int    `json:"business_type"`
		CorpID       string `json:"corpid"`
		Limit        int    `json:"limit"`
		Cursor       string `json:"cursor"`
	}
	if json.Unmarshal(body, &req) != nil {
		return nil, codeDataFormat
	}
	switch {
	case req.BusinessType != 1:
		return nil, codeInvalidParameter
	case req.AgentID != s.AgentID:
		return nil, codeNoAgentPrivilege
	case req.Limit < 0 || req.Limit > 100:
		return nil, codeInvalidParameter
	}
	offset := 0
	if req.Cursor != "" {
		v, ok := strings.CutPrefix(req.Cursor, cursorPrefix)
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 0 {
			return nil, codeInvalidParameter
		}
		offset = n
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []Dealer
	for _, d := range s.w.dealers {
		if req.CorpID == "" || req.CorpID == d.CorpID {
			all = append(all, d)
		}
	}
	if offset > len(all) {
		return nil, codeInvalidParameter
	}
	end := len(all)
	if req.Limit > 0 && offset+req.Limit < end {
		end = offset + req.Limit
	}
	list := make([]map[string]any, 0, end-offset)
	for _, d := range all[offset:end] {
		list = append(list, map[string]any{"corpid": d.CorpID, "corp_name": d.Name, "agentid": d.AgentID})
	}
	ending, next := 1, ""
	if end < len(all) {
		ending, next = 0, fmt.Sprintf("%s%d", cursorPrefix, end)
	}
	return map[string]any{"ending": ending, "next_cursor": next, "corp_list": list}, 0
}

// personReq is the body of unionid_to_pending_id and unionid_to_external_userid.
type personReq struct {
	UnionID string `json:"unionid"`
	OpenID  string `json:"openid"`
	CorpID  string `json:"corpid"` // unionid_to_external_userid only
}

// unionIDToPendingID serves corpgroup/unionid_to_pending_id (§4.4).
func (s *Server) unionIDToPendingID(_ token, body []byte, now time.Time) (map[string]any, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.pquota.take(now) {
		return nil, codeFreqOutOfLimit
	}
	ps, _, code := s.personFromBody(body)
	if code != 0 {
		return nil, code
	}
	if s.PendingReissue {
		return map[string]any{"pending_id": s.issuePending(ps, now)}, 0
	}
	id, _ := s.pendingID(ps, now, true)
	return map[string]any{"pending_id": id}, 0
}

// personFromBody parses a personReq and finds the person: 47001 for bad
// JSON, 40058 when unionid or openid is missing, 610014 (invalid unionid)
// for an unknown unionid or an openid that is not that person's. s.mu must
// be held.
func (s *Server) personFromBody(body []byte) (*person, personReq, int) {
	var req personReq
	if json.Unmarshal(body, &req) != nil {
		return nil, req, codeDataFormat
	}
	if req.UnionID == "" || req.OpenID == "" {
		return nil, req, codeInvalidParameter
	}
	ps, ok := s.w.persons[req.UnionID]
	if !ok || ps.OpenID != req.OpenID {
		return nil, req, codeInvalidUnionID
	}
	return ps, req, 0
}

// externalUserIDToPendingID serves corpgroup/batch/external_userid_to_pending_id (§4.5).
func (s *Server) externalUserIDToPendingID(t token, body []byte, now time.Time) (map[string]any, int) {
	var req struct {
		ChatID         string   `json:"chat_id"`
		ExternalUserID []string `json:"external_userid"`
	}
	if json.Unmarshal(body, &req) != nil {
		return nil, codeDataFormat
	}
	if len(req.ExternalUserID) == 0 || len(req.ExternalUserID) > 100 {
		return nil, codeInvalidParameter
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var ch *chat
	if req.ChatID != "" {
		c, code := s.chatFor(t, req.ChatID)
		if code != 0 {
			return nil, code
		}
		ch = c
	}
	result := make([]map[string]any, 0, len(req.ExternalUserID))
	seen := make(map[string]bool, len(req.ExternalUserID))
	for _, id := range req.ExternalUserID {
		if seen[id] {
			continue
		}
		seen[id] = true
		k, ok := s.w.extOwner[id]
		switch {
		case !ok: // unknown id
			continue
		case t.downstream && k.corpID != t.corpID: // a downstream token sees its own corp only
			continue
		case ch != nil && (k.corpID != ch.Dealer.CorpID || !ch.isMember(k.unionID)): // not in the chat
			continue
		case ch == nil && !s.isCustomer(k): // no follow-up member: removed, or only met in a chat
			continue
		}
		pid, ok := s.lookupPendingID(k, ch, now)
		if !ok {
			continue
		}
		result = append(result, map[string]any{"external_userid": id, "pending_id": pid})
	}
	return map[string]any{"result": result}, 0
}

// unionIDToExternalUserID serves corpgroup/unionid_to_external_userid (§4.6).
func (s *Server) unionIDToExternalUserID(_ token, body []byte, now time.Time) (map[string]any, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.equota.take(now) {
		return nil, codeFreqOutOfLimit
	}
	ps, req, code := s.personFromBody(body)
	if code != 0 {
		return nil, code
	}
	info := make([]map[string]any, 0)
	for _, d := range s.w.dealers {
		if req.CorpID != "" && req.CorpID != d.CorpID {
			continue
		}
		k := extKey{d.CorpID, ps.UnionID}
		if s.isCustomer(k) {
			info = append(info, map[string]any{"corpid": d.CorpID, "external_userid": s.w.ext[k]})
		}
	}
	return map[string]any{"external_userid_info": info}, 0
}

// chatFor finds the chat a request names: 40050 (invalid chat_id) for an
// unknown or dismissed chat, and for another corp's chat with a downstream
// token. s.mu must be held.
func (s *Server) chatFor(t token, chatID string) (*chat, int) {
	c, ok := s.w.chats[chatID]
	if !ok || c.dismissed || t.downstream && c.Dealer.CorpID != t.corpID {
		return nil, codeInvalidChatID
	}
	return c, 0
}

func (c *chat) isMember(unionID string) bool {
	_, ok := c.members[unionID]
	return ok
}

// groupChatGet serves externalcontact/groupchat/get (doc 92122): the owner
// as a member of type 1, joined when the chat was created, then the people
// in the chat as type 2 with their external_userid in the chat's dealer,
// in the order they joined.
func (s *Server) groupChatGet(t token, body []byte, _ time.Time) (map[string]any, int) {
	var req struct {
		ChatID   string `json:"chat_id"`
		NeedName int    `json:"need_name"`
	}
	if json.Unmarshal(body, &req) != nil {
		return nil, codeDataFormat
	}
	if req.ChatID == "" {
		return nil, codeInvalidParameter
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, code := s.chatFor(t, req.ChatID)
	if code != 0 {
		return nil, code
	}
	type member struct {
		id     string
		joined time.Time
	}
	people := make([]member, 0, len(ch.members))
	for u, joined := range ch.members {
		people = append(people, member{s.externalID(extKey{ch.Dealer.CorpID, u}), joined})
	}
	slices.SortFunc(people, func(a, b member) int {
		if c := a.joined.Compare(b.joined); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	// join_scene 1 is "invited directly by a member" in this API's numbering.
	list := make([]map[string]any, 0, len(people)+1)
	list = append(list, map[string]any{"userid": ch.Owner, "type": 1, "join_time": ch.created.Unix(), "join_scene": 1})
	for _, m := range people {
		list = append(list, map[string]any{"userid": m.id, "type": 2, "join_time": m.joined.Unix(), "join_scene": 1})
	}
	return map[string]any{"group_chat": map[string]any{
		"chat_id": ch.ID, "name": "", "owner": ch.Owner, "create_time": ch.created.Unix(), "member_list": list,
	}}, 0
}
