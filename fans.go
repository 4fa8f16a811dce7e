package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/term"

	"github.com/pendinglink/pendinglink/apiclient"
	"github.com/pendinglink/pendinglink/fansimport"
	"github.com/pendinglink/pendinglink/store"
)

const fansUsage = `Usage: pendinglink fans import [flags] FILE

Sends the fans listed in FILE to a running pendinglink server, which registers
them with WeCom as its quota allows. FILE is CSV ("unionid,openid", optional
header row) or JSON lines ({"unionid":"…","openid":"…"} per line). With a
CSV header, optional "priority" (1-100) and "last_active_at" (RFC 3339)
columns give each fan's priority and when it was last active; in JSON lines,
the same fields.

Invalid rows are reported with their line numbers and never sent. After each
batch the server acknowledges, FILE.import-state records how far the import
got; running the same command again resumes from there (--restart ignores it).
Re-sending is harmless anyway: the server skips fans it already registered or
queued.

Flags:
`

// fansCommand runs "pendinglink fans SUBCOMMAND". Only import exists.
func fansCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, fansUsage)
		return errors.New("fans: missing subcommand (import)")
	}
	switch args[0] {
	case "import":
		opts, err := parseImportFlags(args[1:], getenv, stdout, stderr)
		if err != nil {
			return err
		}
		return fansimport.Run(ctx, opts)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, fansUsage)
		return nil
	default:
		fmt.Fprint(stderr, fansUsage)
		return fmt.Errorf("fans: unknown subcommand %q", store.RedactDSN(args[0]))
	}
}

func parseImportFlags(args []string, getenv func(string) string, stdout, stderr io.Writer) (fansimport.Options, error) {
	fs, server, token := apiCommandFlags("fans import", fansUsage, stderr)
	batch := fs.Int("batch", apiclient.MaxFansPerBatch, "fans per request, at most "+strconv.Itoa(apiclient.MaxFansPerBatch))
	format := fs.String("format", "auto", "input format: csv, jsonl or auto (by extension, else by the first line)")
	wait := fs.Bool("wait", true, "after submitting, follow registrations until they are done or the queue drains (--wait=false to skip)")
	noProgress := fs.Bool("no-progress", false, "print plain progress lines instead of a bar (automatic when stdout is not a terminal)")
	restart := fs.Bool("restart", false, "ignore FILE"+fansimport.CheckpointSuffix+" and send the whole file again")
	yes := fs.Bool("yes", false, "import even when the forecast says the quota cannot keep every fan live")

	// Flags may come before or after FILE.
	var files []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return fansimport.Options{}, err
		}
		left := fs.Args()
		if len(left) == 0 {
			break
		}
		if i := len(rest) - len(left) - 1; i >= 0 && rest[i] == "--" {
			files = append(files, left...)
			break
		}
		files, rest = append(files, left[0]), left[1:]
	}
	if len(files) != 1 {
		fs.Usage()
		return fansimport.Options{}, errors.New("fans import: give exactly one FILE")
	}
	opts := fansimport.Options{
		File: files[0], Server: *server, Token: *token, Batch: *batch, Format: strings.ToLower(*format),
		Wait: *wait, Restart: *restart, Yes: *yes, Stdout: stdout,
		Bar: !*noProgress && isTerminal(stdout),
	}
	var err error
	if opts.Server, opts.Token, err = resolveServer("fans import", opts.Server, opts.Token, getenv); err != nil {
		return fansimport.Options{}, err
	}
	if opts.Batch < 1 || opts.Batch > apiclient.MaxFansPerBatch {
		return fansimport.Options{}, fmt.Errorf("fans import: --batch: must be from 1 to %d", apiclient.MaxFansPerBatch)
	}
	switch opts.Format {
	case "csv", "jsonl", "auto":
	case "json", "ndjson":
		opts.Format = "jsonl"
	default:
		return fansimport.Options{}, errors.New("fans import: --format: must be csv, jsonl or auto")
	}
	return opts, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
