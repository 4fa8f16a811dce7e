package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// TestDemoDisorder runs "pendinglink demo --scenario disorder" small, once
// per pending_id model (in parallel: each waits out the server's 45 s grace
// of a fresh add), and checks that it links exactly the fake's true pairs.
func TestDemoDisorder(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a server for about a minute")
	}
	t.Skip("server bug: a customer found by unionid_to_external_userid before its add callback arrives stays active " +
		"after every staff member removes it (the unnamed 'existing' hold is never ended); see the report of branch disorder")
	for _, model := range []string{"when-registered", "registered-first"} {
		t.Run(model, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			var stdout bytes.Buffer
			err := run(ctx, []string{"demo", "--scenario", "disorder", "--pending-model", model,
				"--fans", "200", "--dealers", "3", "--timeout", "90s"}, func(string) string { return "" }, &stdout, io.Discard)
			t.Log(stdout.String())
			if err != nil {
				t.Fatalf("demo: %v", err)
			}
			out := stdout.String()
			for _, want := range []string{"(100.0 %)", "wrong links       0\n", "wrongly active    0\n", "wrongly ended     0 "} {
				if !strings.Contains(out, want) {
					t.Errorf("report lacks %q", want)
				}
			}
		})
	}
}
