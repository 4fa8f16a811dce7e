package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pendinglink/pendinglink/fansimport"
)

func TestFansCommand(t *testing.T) {
	t.Parallel()

	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	t.Run("FlagsAfterFileAndDefaultsFromEnvironment", func(t *testing.T) {
		t.Parallel()
		var stdout, stderr bytes.Buffer
		opts, err := parseImportFlags([]string{"fans.csv", "--wait=false", "--batch", "2"},
			env(map[string]string{"PENDINGLINK_URL": "http://127.0.0.1:9/", "PENDINGLINK_ADMIN_TOKEN": "test-token"}), &stdout, &stderr)
		require.NoError(t, err, stderr.String())
		require.Equal(t, fansimport.Options{
			File: "fans.csv", Server: "http://127.0.0.1:9", Token: "test-token", Batch: 2, Format: "auto", Stdout: &stdout,
		}, opts)
	})

	t.Run("FlagsWinOverTheEnvironment", func(t *testing.T) {
		t.Parallel()
		var stdout, stderr bytes.Buffer
		opts, err := parseImportFlags([]string{"--server", "https://pl.example.com", "--format", "ndjson", "fans.txt"},
			env(map[string]string{"PENDINGLINK_URL": "http://127.0.0.1:9", "PENDINGLINK_ADMIN_TOKEN": "test-token"}), &stdout, &stderr)
		require.NoError(t, err, stderr.String())
		require.Equal(t, "https://pl.example.com", opts.Server)
		require.Equal(t, "jsonl", opts.Format)
		require.True(t, opts.Wait)
		require.Equal(t, 1000, opts.Batch)
	})

	t.Run("MissingTokenNamesVariable", func(t *testing.T) {
		t.Parallel()
		var stdout, stderr bytes.Buffer
		err := fansCommand(t.Context(), []string{"import", "fans.csv"}, env(nil), &stdout, &stderr)
		require.ErrorContains(t, err, "PENDINGLINK_ADMIN_TOKEN: required")
	})

	t.Run("BatchAboveServerLimitIsRefused", func(t *testing.T) {
		t.Parallel()
		var stdout, stderr bytes.Buffer
		err := fansCommand(t.Context(), []string{"import", "--batch", "1001", "fans.csv"},
			env(map[string]string{"PENDINGLINK_ADMIN_TOKEN": "test-token"}), &stdout, &stderr)
		require.ErrorContains(t, err, "--batch: must be from 1 to 1000")
	})

	t.Run("UnknownSubcommandPrintsUsage", func(t *testing.T) {
		t.Parallel()
		var stdout, stderr bytes.Buffer
		err := fansCommand(t.Context(), []string{"export"}, env(nil), &stdout, &stderr)
		require.ErrorContains(t, err, `unknown subcommand "export"`)
		require.Contains(t, stderr.String(), "Usage: pendinglink fans import")
	})
}
