package pipeline

import (
	"context"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/wecom"
)

// TestCoalescer_BisectsIDErrors: WeCom answers 40096 for a whole batch when
// one id in it is invalid, without saying which. The bad ids must fail alone
// and every good id in the batch must still get its answer.
func TestCoalescer_BisectsIDErrors(t *testing.T) {
	t.Parallel()
	requireIsolated(t, wecom.CodeInvalidExternalUserID, 13, "wm003", "wm007", "wm008")

	t.Run("OneBadIDCostsLogarithmicCalls", func(t *testing.T) {
		t.Parallel()
		r := &fakeResolver{Fn: func(_ context.Context, _, _ string, ids []string) ([]wecom.PendingResult, error) {
			if slices.Contains(ids, "wm042") {
				return nil, &wecom.APIError{API: "corpgroup/batch/external_userid_to_pending_id", Code: wecom.CodeInvalidExternalUserID}
			}
			return answerAll(ids), nil
		}}
		ids := idsN("wm", 100)
		b := setupCoalescer(t, r, CoalescerConfig{MaxBatch: len(ids)})
		var answers []<-chan answer
		for _, id := range ids {
			answers = append(answers, resolveAsync(t.Context(), b.c, "wwcorp", "", id))
		}
		failed := 0
		for _, a := range answers {
			if (<-a).err != nil {
				failed++
			}
		}
		require.Equal(t, 1, failed)
		// The first call, then two halves per level down to one id:
		// 1 + 2·⌈log2 100⌉ = 15, where one call per id would be 100.
		require.LessOrEqual(t, len(r.Calls()), 15)
	})
}

// TestCoalescer_DeploymentErrorsFailTheBatchOnce: an error about the
// deployment (no permission) is the same for every id; splitting the batch
// would only multiply calls.
func TestCoalescer_DeploymentErrorsFailTheBatchOnce(t *testing.T) {
	t.Parallel()
	r := requireAllFail(t, wecom.CodeNoPermission, 8)
	require.Len(t, r.Calls(), 1)
}

func requireCode(t *testing.T, err error) int {
	t.Helper()
	var ae *wecom.APIError
	require.ErrorAs(t, err, &ae)
	return ae.Code
}

// TestCoalescer_IsolatesErrorsThatMayConcernOneID: 84061 (no relationship:
// a customer removed before its lookup) and 50002 (out of the permission
// scope) may be WeCom's answer for one id of a batch. They are isolated
// like 40096, so the other customers of the batch still get their
// pending_ids; where every split fails alike the batch is given up early.
func TestCoalescer_IsolatesErrorsThatMayConcernOneID(t *testing.T) {
	t.Parallel()
	for _, code := range []int{wecom.CodeNotCustomerYet, wecom.CodeOutOfScope} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			t.Parallel()
			requireIsolated(t, code, 8, "wm005")
		})
	}

	t.Run("OutOfScopeInBothHalves", func(t *testing.T) {
		t.Parallel()
		requireIsolated(t, wecom.CodeOutOfScope, 8, "wm001", "wm005")
	})

	t.Run("OutOfScopeForEveryIDCostsABoundedNumberOfCalls", func(t *testing.T) {
		t.Parallel()
		r := requireAllFail(t, wecom.CodeOutOfScope, 100)
		require.LessOrEqual(t, len(r.Calls()), 1+maxWideBisectCalls, "not one call per id")
	})
}

// requireIsolated resolves n ids in one batch against a WeCom that answers
// code for any batch holding one of bad: each bad id must get code, every
// other id its pending_id.
func requireIsolated(t *testing.T, code, n int, bad ...string) {
	t.Helper()
	r := &fakeResolver{Fn: func(_ context.Context, _, _ string, ids []string) ([]wecom.PendingResult, error) {
		if slices.ContainsFunc(ids, func(id string) bool { return slices.Contains(bad, id) }) {
			return nil, &wecom.APIError{API: "corpgroup/batch/external_userid_to_pending_id", Code: code}
		}
		return answerAll(ids), nil
	}}
	ids := idsN("wm", n)
	b := setupCoalescer(t, r, CoalescerConfig{MaxBatch: len(ids)})
	answers := make(map[string]<-chan answer, len(ids))
	for _, id := range ids {
		answers[id] = resolveAsync(t.Context(), b.c, "wwcorp", "", id)
	}
	for _, id := range ids {
		got := <-answers[id]
		if slices.Contains(bad, id) {
			require.Equal(t, code, requireCode(t, got.err), id)
			continue
		}
		require.NoError(t, got.err, id)
		require.Equal(t, "p-"+id, got.pendingID, id)
	}
}

// requireAllFail resolves n ids in one batch against a WeCom that answers
// code for every call: each id must get code. It returns the resolver, to
// count the calls.
func requireAllFail(t *testing.T, code, n int) *fakeResolver {
	t.Helper()
	r := &fakeResolver{Fn: func(context.Context, string, string, []string) ([]wecom.PendingResult, error) {
		return nil, &wecom.APIError{API: "corpgroup/batch/external_userid_to_pending_id", Code: code}
	}}
	ids := idsN("wm", n)
	b := setupCoalescer(t, r, CoalescerConfig{MaxBatch: len(ids)})
	var answers []<-chan answer
	for _, id := range ids {
		answers = append(answers, resolveAsync(t.Context(), b.c, "wwcorp", "", id))
	}
	for _, a := range answers {
		require.Equal(t, code, requireCode(t, (<-a).err))
	}
	return r
}
