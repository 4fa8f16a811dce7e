package wecomtest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/pendinglink/pendinglink/crypto"
	"github.com/pendinglink/pendinglink/wecom"
	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// The brand registers a fan, a dealer adds the fan as a customer, and both
// pending_id APIs agree on who it is.
func ExampleNewServer() {
	srv := wecomtest.NewServer()
	defer srv.Close()
	client := srv.Client()
	ctx := context.Background()

	// The world: one dealer sharing the brand's app, one fan.
	dealer := srv.AddDealer("Dealer A")
	fan := srv.AddPerson()

	// The brand registers the fan.
	registered, err := client.UnionIDToPendingID(ctx, fan.UnionID, fan.OpenID)
	if err != nil {
		fmt.Println(err)
		return
	}

	// Later a dealer's staff member adds the fan, and the brand looks the
	// new customer up.
	customer := srv.AddCustomer(dealer, fan, dealer.Staff[0])
	res, err := client.ExternalUserIDToPendingID(ctx, dealer.CorpID, "", []string{customer.ExternalUserID})
	if err != nil {
		fmt.Println(err)
		return
	}

	fmt.Println(res[0].PendingID == registered)
	fmt.Println(srv.Calls(wecomtest.APIUnionIDToPendingID), srv.Calls(wecomtest.APIExternalUserIDToPendingID))
	// Output:
	// true
	// 1 1
}

// A scripted fault: the next call answers -1 (system busy), and the client
// retries it.
func ExampleServer_FailNext() {
	srv := wecomtest.NewServer()
	defer srv.Close()
	fan := srv.AddPerson()

	srv.FailNext(wecomtest.APIUnionIDToPendingID, wecomtest.Fault{Errcode: -1})
	_, err := srv.Client().UnionIDToPendingID(context.Background(), fan.UnionID, fan.OpenID)

	fmt.Println(err)
	fmt.Println(srv.Errcodes(wecomtest.APIUnionIDToPendingID))
	// Output:
	// <nil>
	// map[-1:1 0:1]
}

// The Sender delivers an event the way WeCom does; here to a minimal
// callback handler that verifies, decrypts and parses it.
func ExampleServer_Sender() {
	srv := wecomtest.NewServer()
	defer srv.Close()
	const token, key = "QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"

	// Out of example scope: a stand-in for pendinglink's callback handler.
	c, _ := crypto.New(token, key)
	callback := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		env, _ := crypto.ParseEnvelope(body)
		q := r.URL.Query()
		if c.VerifySignature(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), env.Encrypt) != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		msg, _, _ := c.Decrypt(env.Encrypt)
		ev, _ := wecom.ParseEvent(msg)
		fmt.Println("got", ev.Kind())
	}))
	defer callback.Close()

	dealer := srv.AddDealer("Dealer A")
	customer := srv.AddCustomer(dealer, srv.AddPerson(), dealer.Staff[0])
	ev := srv.ContactEvent(customer, wecom.ChangeAddExternalContact)

	res, err := srv.Sender(callback.URL, token, key).Send(context.Background(), ev)
	fmt.Println(res.Attempts, res.Status, err)
	// Output:
	// got add_external_contact
	// 1 200 <nil>
}

// A transfer (在职继承) moves the customer to a colleague and sends the old
// staff's delete with Source DELETE_BY_TRANSFER; the customer stays the
// dealer's, under the same external_userid.
func ExampleServer_TransferCustomer() {
	srv := wecomtest.NewServer()
	defer srv.Close()
	dealer := srv.AddDealer("Dealer A", "alice", "bob")
	fan := srv.AddPerson()
	customer := srv.AddCustomer(dealer, fan, "alice")

	moved, ev := srv.TransferCustomer(customer, "bob")

	fmt.Println(ev.Kind(), ev.UserID, ev.Source)
	fmt.Println(moved.Staff, moved.ExternalUserID == customer.ExternalUserID)
	fmt.Println(srv.Follows(dealer, fan))
	// Output:
	// del_external_contact alice DELETE_BY_TRANSFER
	// bob true
	// [bob]
}

// Under PendingRegisteredFirst a fan registered after the dealer added them
// is not found until the relationship begins anew.
func ExampleWithPendingModel() {
	srv := wecomtest.NewServer(wecomtest.WithPendingModel(wecomtest.PendingRegisteredFirst))
	defer srv.Close()
	client := srv.Client()
	ctx := context.Background()
	dealer := srv.AddDealer("Dealer A")
	fan := srv.AddPerson()

	// Added first, registered a minute later.
	customer := srv.AddCustomer(dealer, fan, dealer.Staff[0])
	srv.Clock.Advance(time.Minute)
	if _, err := client.UnionIDToPendingID(ctx, fan.UnionID, fan.OpenID); err != nil {
		fmt.Println(err)
		return
	}
	lookup := func() bool {
		res, err := client.ExternalUserIDToPendingID(ctx, dealer.CorpID, "", []string{customer.ExternalUserID})
		return err == nil && res[0].PendingID != ""
	}
	fmt.Println("after registering:", lookup())

	// The staff deletes the fan and adds them again.
	srv.RemoveCustomer(customer)
	srv.Clock.Advance(time.Minute)
	srv.AddCustomer(dealer, fan, dealer.Staff[0])
	fmt.Println("after the re-add:", lookup())
	// Output:
	// after registering: false
	// after the re-add: true
}
