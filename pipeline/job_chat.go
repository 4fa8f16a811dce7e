package pipeline

import (
	"context"
	"errors"
	"fmt"

	"github.com/riverqueue/river"

	"github.com/pendinglink/pendinglink/store"
)

// ChatMembersArgs asks a worker to find the customers a new group chat has
// (its change_external_chat create event names none) and resolve each.
type ChatMembersArgs struct {
	EventID int64  `json:"event_id"`
	CorpID  string `json:"corp_id"`
	ChatID  string `json:"chat_id"`
}

// Kind implements river.JobArgs.
func (ChatMembersArgs) Kind() string { return "chat_members" }

// InsertOpts implements river.JobArgsWithInsertOpts: it feeds resolves.
func (ChatMembersArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: QueueResolve} }

type chatMembersStore interface {
	// RecordChatMembers records the customers a chat had at creation and
	// queues their resolves.
	RecordChatMembers(ctx context.Context, eventID int64, members []string) error
	// UpdateEventState records that the lookup failed for good.
	UpdateEventState(ctx context.Context, id int64, state, reason string) error
}

// chatMembersWorker reads a new chat's members with groupchat/get (the
// dealer's token) and records its customers; members who join later come
// with add_member events.
type chatMembersWorker struct {
	river.WorkerDefaults[ChatMembersArgs]
	cfg   Config
	store chatMembersStore
}

func (w *chatMembersWorker) Work(ctx context.Context, job *river.Job[ChatMembersArgs]) error {
	a := job.Args
	members, err := w.cfg.WeCom.GroupChatMembers(ctx, a.CorpID, a.ChatID)
	if err != nil {
		return classify(err, w.cfg.Now(), w.cfg, func(reason string) {
			if ferr := w.store.UpdateEventState(ctx, a.EventID, store.EventFailed, reason); ferr != nil {
				w.cfg.Logger.Error("record failed chat lookup", "event_id", a.EventID, "err", ferr)
			}
		})
	}
	var customers []string
	for _, m := range members {
		if m.IsCustomer() {
			customers = append(customers, m.UserID)
		}
	}
	if err := w.store.RecordChatMembers(ctx, a.EventID, customers); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return river.JobCancel(err)
		}
		return fmt.Errorf("record members of chat event %d: %w", a.EventID, err)
	}
	return nil
}
