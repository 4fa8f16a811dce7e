package wecom

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"strconv"
	"strings"
)

// Event names carried in the Event element of a decrypted callback.
const (
	EventChangeExternalContact = "change_external_contact"
	EventChangeExternalChat    = "change_external_chat"
)

// Change types of change_external_contact (protocol reference §3.1).
const (
	ChangeAddExternalContact     = "add_external_contact"
	ChangeAddHalfExternalContact = "add_half_external_contact"
	ChangeEditExternalContact    = "edit_external_contact"
	ChangeDelExternalContact     = "del_external_contact"
	ChangeDelFollowUser          = "del_follow_user"
	ChangeTransferFail           = "transfer_fail"
)

// SourceDeleteByTransfer is the Source of a del_external_contact event sent
// because the customer was handed to a colleague (在职继承, §3.1): the
// relationship with the dealer goes on under the new staff member.
const SourceDeleteByTransfer = "DELETE_BY_TRANSFER"

// Change types and update details of change_external_chat (§3.2).
const (
	ChatChangeCreate  = "create"
	ChatChangeUpdate  = "update"
	ChatChangeDismiss = "dismiss"
	ChatAddMember     = "add_member"
	ChatDelMember     = "del_member"
)

// Kinds an event is classified as. They are the keys of events.by_type in /v1/status.
const (
	KindAddExternalContact     = ChangeAddExternalContact
	KindAddHalfExternalContact = ChangeAddHalfExternalContact
	KindEditExternalContact    = ChangeEditExternalContact
	KindDelExternalContact     = ChangeDelExternalContact
	KindDelFollowUser          = ChangeDelFollowUser
	KindTransferFail           = ChangeTransferFail
	KindChatAddMember          = ChatAddMember
	KindChatDelMember          = ChatDelMember
	KindChatCreate             = "chat_create"  // change_external_chat/create
	KindChatDismiss            = "chat_dismiss" // change_external_chat/dismiss
	// KindIgnored is an authentic event pendinglink does not act on: an unknown
	// event or change type, or inner XML that does not parse. It is kept with its
	// raw plaintext so that nothing WeCom sends is lost.
	KindIgnored = "ignored"
)

// Event is one decrypted callback message. Fields that an event kind does not
// carry are empty. Parsing is lenient (no enum checks) because WeCom adds
// change types and scene values without notice (§9 #11).
type Event struct {
	ToUserName     string  `xml:"ToUserName"`
	FromUserName   string  `xml:"FromUserName"`
	CreateTime     int64   `xml:"CreateTime"`
	MsgType        string  `xml:"MsgType"`
	Event          string  `xml:"Event"`
	ChangeType     string  `xml:"ChangeType"`
	UserID         string  `xml:"UserID"`
	ExternalUserID string  `xml:"ExternalUserID"`
	State          string  `xml:"State"`
	WelcomeCode    string  `xml:"WelcomeCode"`
	Source         string  `xml:"Source"`
	FailReason     string  `xml:"FailReason"`
	ChatID         string  `xml:"ChatId"`
	UpdateDetail   string  `xml:"UpdateDetail"`
	JoinScene      string  `xml:"JoinScene"`
	QuitScene      string  `xml:"QuitScene"`
	MemChangeCnt   string  `xml:"MemChangeCnt"`
	MemChangeList  MemList `xml:"MemChangeList"`
	LastMemVer     string  `xml:"LastMemVer"`
	CurMemVer      string  `xml:"CurMemVer"`
}

// MemList reads both MemChangeList formats: <Item> children (WeCom 4.8.0+)
// and the older comma-separated text. A repeated element appends.
type MemList []string

// UnmarshalXML implements xml.Unmarshaler.
func (m *MemList) UnmarshalXML(d *xml.Decoder, st xml.StartElement) error {
	var v struct {
		Text  string   `xml:",chardata"`
		Items []string `xml:"Item"`
	}
	if err := d.DecodeElement(&v, &st); err != nil {
		return err
	}
	if len(v.Items) > 0 {
		for _, s := range v.Items {
			if s = strings.TrimSpace(s); s != "" {
				*m = append(*m, s)
			}
		}
		return nil
	}
	for _, s := range strings.Split(v.Text, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*m = append(*m, s)
		}
	}
	return nil
}

// MarshalXML writes the list in the <Item> format WeCom uses today.
func (m MemList) MarshalXML(e *xml.Encoder, st xml.StartElement) error {
	v := struct {
		Items []string `xml:"Item"`
	}{Items: m}
	return e.EncodeElement(v, st)
}

// ParseEvent parses a decrypted callback message. An error means the XML did
// not parse; the caller keeps such a message as ignored rather than failing
// the callback.
func ParseEvent(msg []byte) (Event, error) {
	var ev Event
	if err := xml.Unmarshal(msg, &ev); err != nil {
		return Event{}, fmt.Errorf("wecom: parse event: %w", err)
	}
	return ev, nil
}

// Kind classifies the event into one of the Kind constants.
func (e Event) Kind() string {
	switch e.Event {
	case EventChangeExternalContact:
		switch e.ChangeType {
		case ChangeAddExternalContact, ChangeAddHalfExternalContact, ChangeEditExternalContact,
			ChangeDelExternalContact, ChangeDelFollowUser, ChangeTransferFail:
			return e.ChangeType
		}
	case EventChangeExternalChat:
		switch e.ChangeType {
		case ChatChangeCreate:
			return KindChatCreate
		case ChatChangeDismiss:
			return KindChatDismiss
		case ChatChangeUpdate:
			switch e.UpdateDetail {
			case ChatAddMember, ChatDelMember:
				return e.UpdateDetail
			}
		}
	}
	return KindIgnored
}

// DedupKey identifies the event across WeCom's retries. It is built from
// decrypted fields only: the ciphertext, nonce and signature change between
// retries (§2.4, §9 #7), and FromUserName+CreateTime collides for two adds in
// the same second. raw is the decrypted message, hashed for ignored events.
//
// The key is "v2|" and the hex SHA-256 of the fields, each length-prefixed,
// so two distinct events cannot share it (a separator may occur inside an
// id) and its size is fixed however many members a chat event lists. The
// prefix keeps it apart from the unhashed keys of earlier versions.
func (e Event) DedupKey(raw []byte) string {
	if e.Kind() == KindIgnored {
		sum := sha256.Sum256(raw)
		return "raw|" + hex.EncodeToString(sum[:])
	}
	h := sha256.New()
	var buf [binary.MaxVarintLen64]byte
	write := func(s string) {
		h.Write(binary.AppendUvarint(buf[:0], uint64(len(s))))
		h.Write([]byte(s))
	}
	for _, s := range []string{
		e.ToUserName, e.Event, e.ChangeType, e.UserID, e.ExternalUserID,
		strconv.FormatInt(e.CreateTime, 10), e.ChatID, e.UpdateDetail, e.MemChangeCnt, e.CurMemVer,
	} {
		write(s)
	}
	h.Write(binary.AppendUvarint(buf[:0], uint64(len(e.MemChangeList))))
	for _, m := range e.MemChangeList {
		write(m)
	}
	return "v2|" + hex.EncodeToString(h.Sum(nil))
}

// Marshal renders the event as WeCom's callback XML. The fake WeCom uses it
// to send events; it is the inverse of ParseEvent.
func (e Event) Marshal() ([]byte, error) {
	type cdata struct {
		V string `xml:",cdata"`
	}
	opt := func(s string) *cdata {
		if s == "" {
			return nil
		}
		return &cdata{s}
	}
	v := struct {
		XMLName        xml.Name `xml:"xml"`
		ToUserName     cdata    `xml:"ToUserName"`
		FromUserName   cdata    `xml:"FromUserName"`
		CreateTime     int64    `xml:"CreateTime"`
		MsgType        cdata    `xml:"MsgType"`
		Event          cdata    `xml:"Event"`
		ChatID         *cdata   `xml:"ChatId,omitempty"`
		ChangeType     *cdata   `xml:"ChangeType,omitempty"`
		UserID         *cdata   `xml:"UserID,omitempty"`
		ExternalUserID *cdata   `xml:"ExternalUserID,omitempty"`
		State          *cdata   `xml:"State,omitempty"`
		WelcomeCode    *cdata   `xml:"WelcomeCode,omitempty"`
		Source         *cdata   `xml:"Source,omitempty"`
		FailReason     *cdata   `xml:"FailReason,omitempty"`
		UpdateDetail   *cdata   `xml:"UpdateDetail,omitempty"`
		JoinScene      string   `xml:"JoinScene,omitempty"`
		QuitScene      string   `xml:"QuitScene,omitempty"`
		MemChangeCnt   string   `xml:"MemChangeCnt,omitempty"`
		MemChangeList  MemList  `xml:"MemChangeList,omitempty"`
		LastMemVer     string   `xml:"LastMemVer,omitempty"`
		CurMemVer      string   `xml:"CurMemVer,omitempty"`
	}{
		ToUserName: cdata{e.ToUserName}, FromUserName: cdata{e.FromUserName}, CreateTime: e.CreateTime,
		MsgType: cdata{e.MsgType}, Event: cdata{e.Event}, ChatID: opt(e.ChatID), ChangeType: opt(e.ChangeType),
		UserID: opt(e.UserID), ExternalUserID: opt(e.ExternalUserID), State: opt(e.State),
		WelcomeCode: opt(e.WelcomeCode), Source: opt(e.Source), FailReason: opt(e.FailReason),
		UpdateDetail: opt(e.UpdateDetail), JoinScene: e.JoinScene, QuitScene: e.QuitScene,
		MemChangeCnt: e.MemChangeCnt, MemChangeList: e.MemChangeList, LastMemVer: e.LastMemVer,
		CurMemVer: e.CurMemVer,
	}
	out, err := xml.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("wecom: marshal event: %w", err)
	}
	return out, nil
}
