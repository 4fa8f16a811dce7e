package quota_test

import (
	"context"
	"fmt"
	"time"

	"github.com/pendinglink/pendinglink/quota"
)

func ExampleNew() {
	ctx := context.Background()

	// Set-up: a fixed clock and a tiny quota of 2 calls an hour, 3 a day.
	now := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	l, err := quota.New(ctx, quota.Config{
		Key:     "unionid_to_pending_id:wwexample",
		Windows: []quota.Window{{Length: time.Hour, Limit: 2}, {Length: 24 * time.Hour, Limit: 3}},
		Now:     func() time.Time { return now },
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	for i := 1; i <= 3; i++ {
		err := l.Reserve(ctx)
		fmt.Printf("call %d: %v\n", i, err)
	}
	fmt.Println("next call at:", l.NextAt().Format(time.TimeOnly))
	for _, u := range l.Usage() {
		fmt.Printf("%s window: %d of %d used\n", u.Length, u.Used, u.Limit)
	}
	// Output:
	// call 1: <nil>
	// call 2: <nil>
	// call 3: quota unionid_to_pending_id:wwexample: 1h0m0s window full (limit 2), retry at 2025-03-01T11:01:00Z
	// next call at: 11:01:00
	// 1h0m0s window: 2 of 2 used
	// 24h0m0s window: 2 of 3 used
}
