package store

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// olderThan selects the follows a change at (?1, ?2) overrides, given the
// arguments at, eventID, eventID, at: those changed by an older event, or
// of the same second for a change without an event (made by a call, which
// comes after every event of its second that it could know of).
const olderThan = `((changed_at, event_id) < (?, ?) OR (? = 0 AND changed_at <= ?))`

// applyEventFollows records what a newly stored event changes in the
// follows, in the event's own transaction: the follows are then current
// whenever an event is, whatever order its jobs run in.
func applyEventFollows(ctx context.Context, tx *sqlTx, ev *Event, id, nowMS int64, changes []followChange) error {
	if ev.Kind == KindChatDismiss && ev.ChatID != "" {
		// The same time followChanges would give it: CreateTime, else when
		// it was received (not when it is applied, which may be later).
		at := nowMS / 1000
		switch {
		case !ev.CreateTime.IsZero():
			at = ev.CreateTime.Unix()
		case !ev.ReceivedAt.IsZero():
			at = ev.ReceivedAt.Unix()
		}
		if _, err := tx.ExecContext(ctx, `UPDATE follows SET active = 0, source = ?, changed_at = ?, event_id = ?, updated_at = ?
			WHERE corp_id = ? AND chat_id = ? AND active = 1 AND `+olderThan,
			ev.Kind, at, id, nowMS, ev.CorpID, ev.ChatID, at, id, id, at); err != nil {
			return dbError("dismiss chat", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO chat_dismissals (corp_id, chat_id, dismissed_at, event_id) VALUES (?, ?, ?, ?)
			ON CONFLICT (corp_id, chat_id) DO NOTHING`, ev.CorpID, ev.ChatID, at, id); err != nil {
			return dbError("record dismissal", err)
		}
	}
	for _, c := range changes {
		if err := applyFollow(ctx, tx, c, nowMS); err != nil {
			return err
		}
	}
	return nil
}

// transferHeirWindow is how long before a transfer a member's add still
// names the colleague it hands the customer to. WeCom sends the heir's add
// (when it does) around the transfer, in either order; any add after the
// transfer takes the unnamed hold over (applyFollow), and so does an add at
// most this long before it, whichever of the two is stored first. A member
// who followed the customer earlier is not the heir: their removal leaves
// the customer to the unnamed one.
const transferHeirWindow = 60 // seconds, as follows.changed_at

// applyFollow applies c unless the holder's row already reflects a newer
// event.
func applyFollow(ctx context.Context, tx *sqlTx, c followChange, nowMS int64) error {
	if c.chatID != "" && c.active {
		var gone bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM chat_dismissals WHERE corp_id = ? AND chat_id = ? AND dismissed_at >= ?)`,
			c.corpID, c.chatID, c.at).Scan(&gone); err != nil {
			return dbError("read dismissal", err)
		}
		if gone {
			// Recorded as ended, not left out: a customer with no follows
			// at all would count as held.
			c.active, c.source = false, KindChatDismiss
		}
	}
	if c.source == FollowTransfer && c.active && c.userID == "" {
		var named bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM follows
			WHERE corp_id = ? AND external_userid = ? AND user_id <> '' AND chat_id = '' AND active = 1 AND changed_at >= ?)`,
			c.corpID, c.externalUserID, c.at-transferHeirWindow).Scan(&named); err != nil {
			return dbError("read follows", err)
		}
		if named {
			return nil
		}
	}
	if c.userID != "" && c.chatID == "" && c.source != FollowTransfer {
		var unnamed string
		switch {
		case !c.active:
			// A removal by a member we never saw add the customer ends the
			// unnamed hold: that member is the colleague a transfer handed
			// the customer to, or the holder unionid_to_external_userid
			// found.
			var known bool
			if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM follows
				WHERE corp_id = ? AND external_userid = ? AND user_id = ? AND chat_id = '')`,
				c.corpID, c.externalUserID, c.userID).Scan(&known); err != nil {
				return dbError("read follow", err)
			}
			if !known {
				unnamed = "1 = 1"
			}
		default:
			// The colleague a transfer named nobody for now holds the
			// customer under their own name.
			unnamed = "source = 'transfer'"
		}
		if unnamed != "" {
			if _, err := tx.ExecContext(ctx, `UPDATE follows SET active = 0, source = ?, changed_at = ?, event_id = ?, updated_at = ?
				WHERE corp_id = ? AND external_userid = ? AND user_id = '' AND chat_id = '' AND active = 1
				AND `+unnamed+` AND `+olderThan,
				c.source, c.at, c.eventID, nowMS, c.corpID, c.externalUserID, c.at, c.eventID, c.eventID, c.at); err != nil {
				return dbError("update unnamed follow", err)
			}
		}
		if c.active {
			// An add at most transferHeirWindow before a transfer stored
			// earlier is the heir's too: it takes that hold over, which
			// keeps its time (the olderThan update above took those older
			// than the add).
			if _, err := tx.ExecContext(ctx, `UPDATE follows SET active = 0, source = ?, updated_at = ?
				WHERE corp_id = ? AND external_userid = ? AND user_id = '' AND chat_id = '' AND active = 1
				AND source = 'transfer' AND changed_at >= ? AND changed_at <= ?`,
				c.source, nowMS, c.corpID, c.externalUserID, c.at, c.at+transferHeirWindow); err != nil {
				return dbError("hand over the transfer hold", err)
			}
			// An add made before unionid_to_external_userid reported the
			// customer, delivered after it, names the holder the check
			// found: that member takes the hold over, so their removal ends
			// it. (The hold keeps its time: an older event never revives it.)
			if _, err := tx.ExecContext(ctx, `UPDATE follows SET active = 0, source = ?, updated_at = ?
				WHERE corp_id = ? AND external_userid = ? AND user_id = '' AND chat_id = '' AND active = 1
				AND source = 'existing' AND changed_at >= ?`,
				c.source, nowMS, c.corpID, c.externalUserID, c.at); err != nil {
				return dbError("hand over the existing hold", err)
			}
		}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO follows (corp_id, external_userid, user_id, chat_id, active, source, changed_at, event_id, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (corp_id, external_userid, user_id, chat_id) DO UPDATE SET
			active = excluded.active, source = excluded.source, changed_at = excluded.changed_at,
			event_id = excluded.event_id, updated_at = excluded.updated_at
		WHERE (follows.changed_at, follows.event_id) < (excluded.changed_at, excluded.event_id)
			OR (excluded.event_id = 0 AND follows.changed_at <= excluded.changed_at)`,
		c.corpID, c.externalUserID, c.userID, c.chatID, boolInt(c.active), c.source, c.at, c.eventID, nowMS)
	return dbError("upsert follow", err)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// held reports whether somebody holds the customer, and if not, the source
// of the newest change (why it is no longer held). A customer with no
// follows at all counts as held: nothing says otherwise, so the lookup that
// found it is trusted.
func held(ctx context.Context, tx *sqlTx, corpID, externalUserID string) (bool, string, error) {
	var (
		active int
		source string
	)
	err := tx.QueryRowContext(ctx, `SELECT active, source FROM follows WHERE corp_id = ? AND external_userid = ?
		ORDER BY active DESC, changed_at DESC, event_id DESC LIMIT 1`, corpID, externalUserID).Scan(&active, &source)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return true, "", nil
	case err != nil:
		return false, "", dbError("read follows", err)
	}
	return active == 1, source, nil
}

// holdExisting records that unionid_to_external_userid reported the
// customer at nowMS: unless somebody is known to hold it already, an
// unnamed holder does.
func holdExisting(ctx context.Context, tx *sqlTx, c CorpCustomer, nowMS int64) error {
	var active bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM follows WHERE corp_id = ? AND external_userid = ? AND active = 1)`,
		c.CorpID, c.ExternalUserID).Scan(&active); err != nil {
		return dbError("read follows", err)
	}
	if active {
		return nil
	}
	return applyFollow(ctx, tx, followChange{corpID: c.CorpID, externalUserID: c.ExternalUserID, active: true,
		source: FollowExisting, at: nowMS / 1000, eventID: 0}, nowMS)
}

// chatMembers lists the customers that ever were members of a chat.
func chatMembers(ctx context.Context, tx *sqlTx, corpID, chatID string) ([]string, error) {
	return queryRows(ctx, tx, "chat members", `SELECT external_userid FROM follows WHERE corp_id = ? AND chat_id = ?`,
		scanOne[string], corpID, chatID)
}

// dropHolders ends every hold on a customer at nowMS.
func dropHolders(ctx context.Context, tx *sqlTx, corpID, externalUserID, source string, nowMS int64) error {
	at := nowMS / 1000
	_, err := tx.ExecContext(ctx, `UPDATE follows SET active = 0, source = ?, changed_at = ?, event_id = 0, updated_at = ?
		WHERE corp_id = ? AND external_userid = ? AND active = 1 AND changed_at <= ?`,
		source, at, nowMS, corpID, externalUserID, at)
	if err != nil {
		return dbError("drop holders", err)
	}
	// A customer never seen held gets one ended row, so that it counts as
	// removed rather than unknown.
	return applyFollow(ctx, tx, followChange{corpID: corpID, externalUserID: externalUserID, source: source, at: at}, nowMS)
}

func (e *sqlEngine) recordChatMembers(ctx context.Context, jobs jobInserter, eventID int64, members []string, now time.Time) error {
	nowMS := now.UnixMilli()
	return e.withTx(ctx, "record chat members", func(tx *sqlTx) error {
		created, err := eventTx(ctx, tx, eventID)
		if err != nil {
			return err
		}
		if len(members) == 0 {
			_, err := tx.ExecContext(ctx, `UPDATE events SET state = 'resolved', updated_at = ? WHERE id = ?`, nowMS, eventID)
			return dbError("update event state", err)
		}
		// The members joined no later than the chat's creation said.
		joined := &Event{Kind: KindAddMember, CorpID: created.CorpID, ChatID: created.ChatID, Members: members,
			CreateTime: created.CreateTime, ReceivedAt: created.ReceivedAt}
		if err := applyEventFollows(ctx, tx, joined, eventID, nowMS, followChanges(joined, eventID, joined.ReceivedAt)); err != nil {
			return err
		}
		return dbError("enqueue member resolves", jobs.insert(ctx, tx.Tx, jobs.eventJobs(joined, eventID)))
	})
}
