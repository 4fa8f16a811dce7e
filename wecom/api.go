package wecom

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// MaxBatchIDs is the most external_userids one
// batch/external_userid_to_pending_id call accepts (§4.5).
const MaxBatchIDs = 100

// maxSharePages stops a list_app_share_info loop whose cursor never ends
// (100 corps a page, so 100,000 corps).
const maxSharePages = 1000

type unionIDReq struct {
	UnionID string `json:"unionid"`
	OpenID  string `json:"openid"`
}

type pendingIDResp struct {
	respCommon
	PendingID string `json:"pending_id"`
}

// UnionIDToPendingID registers a fan (unionid and openid of the same
// mini-program or 服务号) and returns their pending_id, valid for 90 days
// (corpgroup/unionid_to_pending_id, §4.4). It uses the upstream token and
// reserves Config.PendingIDQuota before every request.
func (c *Client) UnionIDToPendingID(ctx context.Context, unionID, openID string) (string, error) {
	if unionID == "" || openID == "" {
		return "", fmt.Errorf("%w: %s: unionid and openid are required", ErrInvalidArgument, APIUnionIDToPendingID)
	}
	up := c.upstreamKey()
	resp, err := do[pendingIDResp](ctx, c, call{
		api: APIUnionIDToPendingID, method: http.MethodPost, token: &up, quota: c.cfg.PendingIDQuota,
		body: unionIDReq{UnionID: unionID, OpenID: openID},
	})
	if err != nil {
		return "", err
	}
	if resp.PendingID == "" {
		return "", fmt.Errorf("wecom: %s: response has no pending_id", APIUnionIDToPendingID)
	}
	return resp.PendingID, nil
}

// PendingResult is the pending_id of one external_userid. PendingID is ""
// when WeCom returned none for it.
type PendingResult struct {
	ExternalUserID string
	PendingID      string
}

type batchReq struct {
	ChatID         string   `json:"chat_id,omitempty"`
	ExternalUserID []string `json:"external_userid"`
}

type batchResp struct {
	respCommon
	Result []struct {
		ExternalUserID string `json:"external_userid"`
		PendingID      string `json:"pending_id"`
	} `json:"result"`
}

// ExternalUserIDToPendingID converts at most MaxBatchIDs external_userids
// of one corp to pending_ids (corpgroup/batch/external_userid_to_pending_id,
// §4.5). chatID, if set, limits the lookup to members of that customer group.
// It returns one result per input id, in input order; an id WeCom omits or
// answers with "" gets PendingID "" (§9 #4), and results are matched by id,
// never by position. More than MaxBatchIDs ids return ErrTooManyIDs without
// a call. corpID selects the downstream token when Config.PendingToken is
// "downstream" and is ignored otherwise.
func (c *Client) ExternalUserIDToPendingID(ctx context.Context, corpID, chatID string, externalUserIDs []string) ([]PendingResult, error) {
	if len(externalUserIDs) > MaxBatchIDs {
		return nil, fmt.Errorf("%w: got %d", ErrTooManyIDs, len(externalUserIDs))
	}
	out := make([]PendingResult, len(externalUserIDs))
	ids := make([]string, 0, len(externalUserIDs))
	seen := make(map[string]bool, len(externalUserIDs))
	for i, id := range externalUserIDs {
		out[i].ExternalUserID = id
		if id != "" && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return out, nil
	}
	tk := c.upstreamKey()
	if c.cfg.PendingToken == PendingTokenDownstream {
		if corpID == "" {
			return nil, fmt.Errorf("%w: %s: corpid is required with a downstream token", ErrInvalidArgument, APIExternalUserIDToPendingID)
		}
		agent, err := c.downstreamAgent(ctx, corpID)
		if err != nil {
			return nil, err
		}
		tk = tokenKey{corpID: corpID, agentID: agent, downstream: true}
	}
	resp, err := do[batchResp](ctx, c, call{
		api: APIExternalUserIDToPendingID, method: http.MethodPost, token: &tk, corp: corpID,
		body: batchReq{ChatID: chatID, ExternalUserID: ids},
	})
	if err != nil {
		if tk.downstream {
			c.forgetAgentOn(err, corpID)
		}
		return nil, err
	}
	got := make(map[string]string, len(resp.Result))
	for _, r := range resp.Result {
		if r.PendingID != "" {
			got[r.ExternalUserID] = r.PendingID
		}
	}
	for i := range out {
		out[i].PendingID = got[out[i].ExternalUserID]
	}
	return out, nil
}

// ExternalUserIDInfo is one corp's external_userid for a WeChat user.
type ExternalUserIDInfo struct {
	CorpID         string
	ExternalUserID string
}

type externalUserIDReq struct {
	UnionID string `json:"unionid"`
	OpenID  string `json:"openid"`
	CorpID  string `json:"corpid,omitempty"`
}

type externalUserIDResp struct {
	respCommon
	ExternalUserIDInfo []struct {
		CorpID         string `json:"corpid"`
		ExternalUserID string `json:"external_userid"`
	} `json:"external_userid_info"`
}

// UnionIDToExternalUserID finds the external_userids a fan already has as
// a customer (corpgroup/unionid_to_external_userid, §4.6): in corp corpID,
// or in every corp when corpID is "". It uses the upstream token and
// reserves Config.ExternalUserIDQuota before every request.
func (c *Client) UnionIDToExternalUserID(ctx context.Context, unionID, openID, corpID string) ([]ExternalUserIDInfo, error) {
	if unionID == "" || openID == "" {
		return nil, fmt.Errorf("%w: %s: unionid and openid are required", ErrInvalidArgument, APIUnionIDToExternalUserID)
	}
	up := c.upstreamKey()
	resp, err := do[externalUserIDResp](ctx, c, call{
		api: APIUnionIDToExternalUserID, method: http.MethodPost, token: &up, quota: c.cfg.ExternalUserIDQuota,
		body: externalUserIDReq{UnionID: unionID, OpenID: openID, CorpID: corpID},
	})
	if err != nil {
		return nil, err
	}
	out := make([]ExternalUserIDInfo, 0, len(resp.ExternalUserIDInfo))
	for _, e := range resp.ExternalUserIDInfo {
		out = append(out, ExternalUserIDInfo{CorpID: e.CorpID, ExternalUserID: e.ExternalUserID})
	}
	return out, nil
}

// SharedCorp is a downstream corp the app is shared with.
type SharedCorp struct {
	CorpID   string
	CorpName string
	AgentID  int64 // the app's agentid inside CorpID
}

type shareReq struct {
	AgentID      int64  `json:"agentid"`
	BusinessType int    `json:"business_type"`
	CorpID       string `json:"corpid,omitempty"`
	Limit        int    `json:"limit"`
	Cursor       string `json:"cursor"`
}

type shareResp struct {
	respCommon
	Ending     int    `json:"ending"`
	NextCursor string `json:"next_cursor"`
	CorpList   []struct {
		CorpID   string `json:"corpid"`
		CorpName string `json:"corp_name"`
		AgentID  int64  `json:"agentid"`
	} `json:"corp_list"`
}

// ListAppShareInfo lists the downstream corps the app is shared with
// (corpgroup/corp/list_app_share_info, business_type 1, §4.3), following
// next_cursor until ending is 1. Corps that have not confirmed a share
// with sensitive permissions are missing. It requires Config.AgentID and
// remembers each corp's agentid for downstream tokens.
func (c *Client) ListAppShareInfo(ctx context.Context) ([]SharedCorp, error) {
	return c.listAppShareInfo(ctx, "")
}

func (c *Client) listAppShareInfo(ctx context.Context, corpID string) ([]SharedCorp, error) {
	if c.cfg.AgentID == 0 {
		return nil, fmt.Errorf("%w: %s: Config.AgentID is required", ErrInvalidArgument, APIListAppShareInfo)
	}
	up := c.upstreamKey()
	out := []SharedCorp{}
	cursor := ""
	for page := 1; ; page++ {
		resp, err := do[shareResp](ctx, c, call{
			api: APIListAppShareInfo, method: http.MethodPost, token: &up,
			// agentid goes in the body: PowerWeChat's query parameter is ignored (§7 #13).
			body: shareReq{AgentID: c.cfg.AgentID, BusinessType: businessTypeUpDown, CorpID: corpID, Limit: 100, Cursor: cursor},
		})
		if err != nil {
			return nil, err
		}
		for _, e := range resp.CorpList {
			out = append(out, SharedCorp{CorpID: e.CorpID, CorpName: e.CorpName, AgentID: e.AgentID})
		}
		if resp.Ending == 1 {
			break
		}
		if resp.NextCursor == "" {
			// Nothing more can be fetched; asking again would repeat page 1.
			c.log.LogAttrs(ctx, slog.LevelWarn, "wecom: list_app_share_info: ending 0 without next_cursor",
				slog.Int("page", page))
			break
		}
		if resp.NextCursor == cursor || page >= maxSharePages {
			return nil, fmt.Errorf("wecom: %s: pagination does not end (page %d)", APIListAppShareInfo, page)
		}
		cursor = resp.NextCursor
	}
	c.agentMu.Lock()
	for _, s := range out {
		if _, configured := c.cfg.DownstreamAgents[s.CorpID]; !configured && s.AgentID != 0 {
			c.agents[s.CorpID] = s.AgentID
			c.lookups[s.CorpID] = true
		}
	}
	c.agentMu.Unlock()
	return out, nil
}

// downstreamAgent returns the app's agentid inside corpID: from
// Config.DownstreamAgents, an earlier lookup, or list_app_share_info.
func (c *Client) downstreamAgent(ctx context.Context, corpID string) (int64, error) {
	c.agentMu.Lock()
	agent, ok := c.agents[corpID]
	c.agentMu.Unlock()
	if ok {
		return agent, nil
	}
	if _, err := c.listAppShareInfo(ctx, corpID); err != nil {
		return 0, err
	}
	c.agentMu.Lock()
	agent, ok = c.agents[corpID]
	c.agentMu.Unlock()
	if !ok {
		return 0, fmt.Errorf("%w: %s", ErrNotShared, corpID)
	}
	return agent, nil
}

// forgetAgentOn drops a looked-up agentid when WeCom says the corp no
// longer shares the app or the agentid is not this app's, so the next call
// looks it up again. Configured agentids are kept: they are the operator's.
func (c *Client) forgetAgentOn(err error, corpID string) {
	code, ok := apiCode(err)
	if !ok || (code != CodeAppNotShared && code != CodeNoAppPermission) {
		return
	}
	c.agentMu.Lock()
	defer c.agentMu.Unlock()
	if c.lookups[corpID] {
		delete(c.agents, corpID)
		delete(c.lookups, corpID)
	}
}

// Member types of a customer group chat (externalcontact/groupchat/get).
const (
	ChatMemberStaff    = 1 // a member of the corp that owns the chat
	ChatMemberCustomer = 2 // an external contact: UserID is their external_userid
)

// ChatMember is one member of a customer group chat.
type ChatMember struct {
	// UserID is the staff userid for ChatMemberStaff, and the
	// external_userid in the chat's corp for ChatMemberCustomer.
	UserID   string
	Type     int
	JoinTime time.Time
}

// IsCustomer reports whether m is an external contact, whose UserID can be
// passed to ExternalUserIDToPendingID with the chat's id.
func (m ChatMember) IsCustomer() bool { return m.Type == ChatMemberCustomer }

type groupChatReq struct {
	ChatID   string `json:"chat_id"`
	NeedName int    `json:"need_name"`
}

type groupChatResp struct {
	respCommon
	GroupChat struct {
		ChatID     string `json:"chat_id"`
		Owner      string `json:"owner"`
		MemberList []struct {
			UserID   string `json:"userid"`
			Type     int    `json:"type"`
			JoinTime int64  `json:"join_time"`
		} `json:"member_list"`
	} `json:"group_chat"`
}

// GroupChatMembers returns the current members of a customer group chat of
// corp corpID (externalcontact/groupchat/get): the staff in it and the
// customers, whose UserID is their external_userid (IsCustomer). WeCom
// answers only with the token of the corp that owns the chat, so a corpID
// other than Config.CorpID gets the downstream token of that corp, whatever
// Config.PendingToken says; an unknown or dismissed chat is errcode 40050.
// No API-specific quota is documented; WeCom's general limits apply.
func (c *Client) GroupChatMembers(ctx context.Context, corpID, chatID string) ([]ChatMember, error) {
	if corpID == "" || chatID == "" {
		return nil, fmt.Errorf("%w: %s: corpid and chat_id are required", ErrInvalidArgument, APIGroupChatGet)
	}
	tk := c.upstreamKey()
	if corpID != c.cfg.CorpID {
		agent, err := c.downstreamAgent(ctx, corpID)
		if err != nil {
			return nil, err
		}
		tk = tokenKey{corpID: corpID, agentID: agent, downstream: true}
	}
	resp, err := do[groupChatResp](ctx, c, call{
		api: APIGroupChatGet, method: http.MethodPost, token: &tk, corp: corpID,
		body: groupChatReq{ChatID: chatID},
	})
	if err != nil {
		if tk.downstream {
			c.forgetAgentOn(err, corpID)
		}
		return nil, err
	}
	out := make([]ChatMember, 0, len(resp.GroupChat.MemberList))
	for _, m := range resp.GroupChat.MemberList {
		out = append(out, ChatMember{UserID: m.UserID, Type: m.Type, JoinTime: time.Unix(m.JoinTime, 0).UTC()})
	}
	return out, nil
}
