package wecom_test

import (
	"context"
	"fmt"

	"github.com/pendinglink/pendinglink/wecom/wecomtest"
)

// A batch lookup answers one result per id, in the order asked; an id WeCom
// has no pending_id for comes back with an empty PendingID, never as an error
// for the whole batch.
func ExampleClient_ExternalUserIDToPendingID() {
	// Out of example scope: a fake WeCom with one dealer, a registered fan who
	// became its customer, and a customer the brand never registered.
	srv := wecomtest.NewServer()
	defer srv.Close()
	dealer := srv.AddDealer("Dealer A")
	fan, stranger := srv.AddPerson(), srv.AddPerson()
	client := srv.Client()
	ctx := context.Background()
	if _, err := client.UnionIDToPendingID(ctx, fan.UnionID, fan.OpenID); err != nil {
		fmt.Println(err)
		return
	}
	known := srv.AddCustomer(dealer, fan, dealer.Staff[0])
	unknown := srv.AddCustomer(dealer, stranger, dealer.Staff[0])

	res, err := client.ExternalUserIDToPendingID(ctx, dealer.CorpID, "", []string{unknown.ExternalUserID, known.ExternalUserID})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range res {
		fmt.Println(r.ExternalUserID == known.ExternalUserID, r.PendingID != "")
	}
	// Output:
	// false false
	// true true
}

// A dealer's group chat is read with that dealer's downstream token; its
// customers are the members of type 2, listed by external_userid.
func ExampleClient_GroupChatMembers() {
	// Out of example scope: a fake WeCom with one dealer's chat of two fans.
	srv := wecomtest.NewServer()
	defer srv.Close()
	dealer := srv.AddDealer("Dealer A", "alice")
	fan1, fan2 := srv.AddPerson(), srv.AddPerson()
	chat := srv.AddGroupChat(dealer, "alice", fan1, fan2)

	members, err := srv.Client().GroupChatMembers(context.Background(), dealer.CorpID, chat.ID)
	if err != nil {
		fmt.Println(err)
		return
	}
	customers := 0
	for _, m := range members {
		if m.IsCustomer() {
			customers++ // m.UserID is the fan's external_userid in the dealer
			continue
		}
		fmt.Println("staff", m.UserID)
	}
	fmt.Println("customers", customers)
	// Output:
	// staff alice
	// customers 2
}
