// Package pipelinetest has fakes of the pipeline's dependencies, for the
// tests of the pipeline and of the packages that use it. Only tests import it.
package pipelinetest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/quota"
	"github.com/pendinglink/pendinglink/wecom"
)

// FakeWeCom is a pipeline.WeComAPI whose methods are set per test. An unset method
// fails the call, so a test states every call it expects.
type FakeWeCom struct {
	UnionIDToPendingIDFunc        func(ctx context.Context, unionID, openID string) (string, error)
	UnionIDToExternalUserIDFunc   func(ctx context.Context, unionID, openID, corpID string) ([]wecom.ExternalUserIDInfo, error)
	ExternalUserIDToPendingIDFunc func(ctx context.Context, corpID, chatID string, ids []string) ([]wecom.PendingResult, error)
	GroupChatMembersFunc          func(ctx context.Context, corpID, chatID string) ([]wecom.ChatMember, error)
	StatsFunc                     func() wecom.Stats

	mu    sync.Mutex
	calls []string // "api unionid openid", in call order
}

var (
	_ pipeline.WeComAPI                = (*FakeWeCom)(nil)
	_ interface{ Stats() wecom.Stats } = (*FakeWeCom)(nil)
	_ pipeline.Quota                   = (*FakeQuota)(nil)
)

// record notes a call.
func (f *FakeWeCom) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

// Calls returns a copy of the calls made so far.
func (f *FakeWeCom) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// UnionIDToPendingID implements pipeline.WeComAPI.
func (f *FakeWeCom) UnionIDToPendingID(ctx context.Context, unionID, openID string) (string, error) {
	f.record("unionid_to_pending_id " + unionID + " " + openID)
	if f.UnionIDToPendingIDFunc == nil {
		return "", errors.New("FakeWeCom: unexpected UnionIDToPendingID")
	}
	return f.UnionIDToPendingIDFunc(ctx, unionID, openID)
}

// UnionIDToExternalUserID implements pipeline.WeComAPI.
func (f *FakeWeCom) UnionIDToExternalUserID(ctx context.Context, unionID, openID, corpID string) ([]wecom.ExternalUserIDInfo, error) {
	f.record("unionid_to_external_userid " + unionID + " " + openID)
	if f.UnionIDToExternalUserIDFunc == nil {
		return nil, errors.New("FakeWeCom: unexpected UnionIDToExternalUserID")
	}
	return f.UnionIDToExternalUserIDFunc(ctx, unionID, openID, corpID)
}

// GroupChatMembers implements pipeline.WeComAPI.
func (f *FakeWeCom) GroupChatMembers(ctx context.Context, corpID, chatID string) ([]wecom.ChatMember, error) {
	f.record("groupchat/get " + corpID + " " + chatID)
	if f.GroupChatMembersFunc == nil {
		return nil, errors.New("FakeWeCom: unexpected GroupChatMembers")
	}
	return f.GroupChatMembersFunc(ctx, corpID, chatID)
}

// ExternalUserIDToPendingID implements pipeline.WeComAPI.
func (f *FakeWeCom) ExternalUserIDToPendingID(ctx context.Context, corpID, chatID string, ids []string) ([]wecom.PendingResult, error) {
	f.record("external_userid_to_pending_id " + corpID + " " + strings.Join(ids, ","))
	if f.ExternalUserIDToPendingIDFunc == nil {
		return nil, errors.New("FakeWeCom: unexpected ExternalUserIDToPendingID")
	}
	return f.ExternalUserIDToPendingIDFunc(ctx, corpID, chatID, ids)
}

// Stats implements pipeline.WeComAPI.
func (f *FakeWeCom) Stats() wecom.Stats {
	if f.StatsFunc == nil {
		return wecom.Stats{}
	}
	return f.StatsFunc()
}

// FakeQuota is a registration limiter frozen in one state.
type FakeQuota struct {
	// Next is when the next call may be made.
	Next time.Time
	// Windows is what Usage reports.
	Windows []quota.Usage
}

// NextAt implements pipeline.Quota.
func (q *FakeQuota) NextAt() time.Time { return q.Next }

// Usage implements pipeline.Quota.
func (q *FakeQuota) Usage() []quota.Usage { return q.Windows }

// pendingIDs answers UnionIDToPendingID with ids, one per call.
func PendingIDs(ids ...string) func(context.Context, string, string) (string, error) {
	var n atomic.Int64
	return func(context.Context, string, string) (string, error) {
		i := int(n.Add(1)) - 1
		if i >= len(ids) {
			return "", errors.New("FakeWeCom: no pending_id left")
		}
		return ids[i], nil
	}
}
