package store_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pendinglink/pendinglink/store"
	"github.com/pendinglink/pendinglink/store/storetest"
)

// ExampleOpen saves one callback twice, as when WeCom retries: the second
// save is not an error, and enqueues no second job.
func ExampleOpen() {
	ctx := context.Background()

	// Out of example scope: a throwaway directory for the database file.
	dir, err := os.MkdirTemp("", "pendinglink-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	// Out of example scope: the pipeline's policy decides which jobs follow
	// an event; a test policy stands in for it.
	db, err := store.Open(ctx, store.Config{DSN: filepath.Join(dir, "pendinglink.db"), Jobs: storetest.Policy{}})
	if err != nil {
		panic(err)
	}
	defer db.Close()

	for range 2 {
		ev := &store.Event{
			DedupKey:       "wwtestcorp|change_external_contact|add_external_contact|test-staff|wmtestcustomer|1700000000",
			CorpID:         "wwtestcorp",
			Kind:           store.KindAddExternalContact,
			Event:          "change_external_contact",
			ChangeType:     "add_external_contact",
			UserID:         "test-staff",
			ExternalUserID: "wmtestcustomer",
			CreateTime:     time.Unix(1700000000, 0),
			Raw:            []byte("<xml>…</xml>"),
		}
		inserted, err := db.SaveEvent(ctx, ev)
		if err != nil {
			panic(err)
		}
		fmt.Printf("inserted=%t state=%s\n", inserted, ev.State)
	}

	st, err := db.Status(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Printf("received=%d duplicate=%d jobs=%d\n", st.EventsReceived, st.EventsDuplicate, st.QueuePending)

	// Output:
	// inserted=true state=pending
	// inserted=false state=pending
	// received=1 duplicate=1 jobs=1
}
