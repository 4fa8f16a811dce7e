package pipeline_test

import (
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/pipeline"
	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
)

func argsOf(params []river.InsertManyParams) []river.JobArgs {
	var out []river.JobArgs
	for _, p := range params {
		out = append(out, p.Args)
	}
	return out
}

func TestPolicy_EventJobs(t *testing.T) {
	t.Parallel()
	var p pipeline.Policy

	// Ensure an add resolves its customer and a removal ends its link:
	// one job for the event's own contact.
	for _, tc := range []struct {
		name  string
		kinds []string
		job   func(ev *store.Event) river.JobArgs
	}{
		{"AddsResolveTheirCustomer", []string{store.KindAddExternalContact, store.KindAddHalfExternalContact},
			func(ev *store.Event) river.JobArgs {
				return pipeline.ResolveArgs{EventID: 7, CorpID: ev.CorpID, ExternalUserID: ev.ExternalUserID, UserID: ev.UserID}
			}},
		{"RemovalsEndLinks", []string{store.KindDelExternalContact, store.KindDelFollowUser},
			func(ev *store.Event) river.JobArgs {
				return pipeline.EndLinkArgs{EventID: 7, CorpID: ev.CorpID, ExternalUserID: ev.ExternalUserID, UserID: ev.UserID}
			}},
		{"MembersLeavingEndTheirLinks", []string{store.KindDelMember},
			func(ev *store.Event) river.JobArgs {
				return pipeline.EndLinkArgs{EventID: 7, CorpID: ev.CorpID, ChatID: ev.ChatID, Members: ev.Members}
			}},
		{"NewChatLooksUpItsMembers", []string{store.KindChatCreate},
			func(ev *store.Event) river.JobArgs {
				return pipeline.ChatMembersArgs{EventID: 7, CorpID: ev.CorpID, ChatID: ev.ChatID}
			}},
		{"DismissEndsTheChatsLinks", []string{store.KindChatDismiss},
			func(ev *store.Event) river.JobArgs {
				return pipeline.EndLinkArgs{EventID: 7, CorpID: ev.CorpID, ChatID: ev.ChatID}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, kind := range tc.kinds {
				ev := storetest.NewEvent(kind)
				require.Equal(t, []river.JobArgs{tc.job(ev)}, argsOf(p.EventJobs(ev, 7)), kind)
			}
		})
	}

	t.Run("AddMemberResolvesEachMember", func(t *testing.T) {
		t.Parallel()
		ev := storetest.NewEvent(store.KindAddMember)
		ev.Members = []string{"wmtest-a", "wmtest-b", "wmtest-c"}
		var want []river.JobArgs
		for _, m := range ev.Members {
			want = append(want, pipeline.ResolveArgs{EventID: 7, CorpID: ev.CorpID, ExternalUserID: m, UserID: ev.UserID, ChatID: ev.ChatID})
		}
		require.Equal(t, want, argsOf(p.EventJobs(ev, 7)))
		ev.Members = nil
		require.Empty(t, p.EventJobs(ev, 7), "no members, nothing to resolve")
	})

	t.Run("OtherKindsHaveNoJob", func(t *testing.T) {
		t.Parallel()
		for _, kind := range []string{store.KindEditExternalContact, store.KindTransferFail, store.KindIgnored} {
			require.Empty(t, p.EventJobs(storetest.NewEvent(kind), 7), kind)
		}
	})
}

func TestPolicy_FollowUps(t *testing.T) {
	t.Parallel()
	fan := store.FanInput{UnionID: "test-u1", OpenID: "o-1"}
	link := store.Link{ID: 42}

	require.Empty(t, pipeline.Policy{}.NotificationJobs(link), "no webhook, notifications stay in the outbox")
	require.Equal(t, []river.JobArgs{pipeline.NotifyArgs{LinkID: 42}}, argsOf(pipeline.Policy{Notify: true}.NotificationJobs(link)))
	require.Equal(t, pipeline.NotifyMaxAttempts, pipeline.NotifyArgs{}.InsertOpts().MaxAttempts)

	require.Empty(t, pipeline.Policy{}.PendingIDJobs(fan))
	require.Empty(t, pipeline.Policy{Notify: true}.PendingIDJobs(fan), "existing customers are found by the reconcile job")
}

// TestPeriodicJobs_OneRunAtATime: a periodic run still going when the next
// is due must not get company (two reconcile runs would check the same fans).
func TestPeriodicJobs_OneRunAtATime(t *testing.T) {
	t.Parallel()
	jobs := pipeline.PeriodicInsert()
	require.Len(t, pipeline.PeriodicJobs(time.Hour, time.Minute), len(jobs))
	for _, id := range []string{"renew", "reconcile"} {
		args, opts := jobs[id]()
		require.NotNil(t, opts, id)
		require.Contains(t, opts.UniqueOpts.ByState, rivertype.JobStateRunning, args.Kind())
		require.Contains(t, opts.UniqueOpts.ByState, rivertype.JobStateAvailable, args.Kind())
	}
}
