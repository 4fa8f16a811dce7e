package store

import "time"

// Follow sources that are not event kinds.
const (
	// FollowTransfer holds a customer for the colleague a transfer (在职继承)
	// handed it to, until that colleague's own add or removal arrives.
	FollowTransfer = "transfer"
	// FollowExisting holds a customer that unionid_to_external_userid
	// reported, or that a link made before follows were kept stood for.
	FollowExisting = "existing"
)

// followChange is what one event says about one holder of a customer: a
// staff member (UserID), a chat (ChatID) or, with both "", an unnamed one.
type followChange struct {
	corpID, externalUserID, userID, chatID string
	active                                 bool
	source                                 string
	// at and eventID order changes: a change applies only over an older one.
	at      int64
	eventID int64
}

// followChanges returns what ev, stored under id, changes in the follows.
// These are the rules of issue "every relationship linked":
//   - an add makes its staff member a holder;
//   - a removal ends that member's hold only, so a customer followed by
//     several members stays held until the last one goes;
//   - a removal by transfer ends the old member's hold and hands it to an
//     unnamed holder (the colleague), so the customer stays held;
//   - add_member and del_member start and end chat memberships; a dismiss
//     ends every membership of the chat (see applyEventFollows);
//   - edits, transfer_fail and chat creation change nothing here.
func followChanges(ev *Event, id int64, receivedAt time.Time) []followChange {
	at := receivedAt.Unix()
	if !ev.CreateTime.IsZero() {
		at = ev.CreateTime.Unix()
	}
	staff := func(active bool) followChange {
		return followChange{corpID: ev.CorpID, externalUserID: ev.ExternalUserID, userID: ev.UserID,
			active: active, source: ev.Kind, at: at, eventID: id}
	}
	chat := func(active bool) []followChange {
		out := make([]followChange, 0, len(ev.Members))
		for _, m := range ev.Members {
			out = append(out, followChange{corpID: ev.CorpID, externalUserID: m, chatID: ev.ChatID,
				active: active, source: ev.Kind, at: at, eventID: id})
		}
		return out
	}
	switch ev.Kind {
	case KindAddExternalContact, KindAddHalfExternalContact:
		if ev.ExternalUserID == "" {
			return nil
		}
		return []followChange{staff(true)}
	case KindDelExternalContact, KindDelFollowUser:
		if ev.ExternalUserID == "" {
			return nil
		}
		gone := staff(false)
		if ev.Kind == KindDelExternalContact && ev.Source == SourceDeleteByTransfer {
			gone.source = FollowTransfer
			heir := staff(true)
			heir.userID, heir.source = "", FollowTransfer
			return []followChange{gone, heir}
		}
		return []followChange{gone}
	case KindAddMember:
		if ev.ChatID == "" {
			return nil
		}
		return chat(true)
	case KindDelMember:
		if ev.ChatID == "" {
			return nil
		}
		return chat(false)
	}
	return nil
}
