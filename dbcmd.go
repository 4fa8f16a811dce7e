package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/pendinglink/pendinglink/store"
)

const dbUsage = `Usage: pendinglink db copy --from FILE.db --to postgres://… [flags]

Copies a pendinglink database into another (typically a SQLite file into a
fresh PostgreSQL database, when a brand outgrows one machine): events, fans,
pending_ids, resolutions, follows, links, outbox, quota counters, reconcile
sweeps and the jobs not yet done. Stop the service first. Both databases are
migrated to the current schema. The copy is resumable (run it again after an
interruption: rows already copied are skipped) and verified by counts; it
exits non-zero if a table's count falls short.

Flags:
`

// dbCommand runs "pendinglink db SUBCOMMAND". Only copy exists.
func dbCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "copy" {
		fmt.Fprint(stderr, dbUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return nil
		}
		return errors.New("db: say what to do: copy")
	}
	fs := flag.NewFlagSet("db copy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), dbUsage)
		fs.PrintDefaults()
	}
	from := fs.String("from", "", "the source database: a SQLite file path (or a postgres:// DSN)")
	to := fs.String("to", "", "the destination database: a postgres:// DSN (or a SQLite file path)")
	batch := fs.Int("batch", 1000, "rows per insert")
	noProgress := fs.Bool("no-progress", false, "print a line per table instead of progress bars (automatic when stdout is not a terminal)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if err := noArgs("db copy", fs); err != nil {
		return err
	}
	switch {
	case *from == "" || *to == "":
		fs.Usage()
		return errors.New("db copy: --from and --to are required")
	case *from == *to:
		return errors.New("db copy: --from and --to are the same database")
	case *batch < 1 || *batch > 10_000:
		return errors.New("db copy: --batch must be from 1 to 10000")
	}
	quiet := slog.New(slog.DiscardHandler)
	src, err := store.Open(ctx, store.Config{DSN: *from, Logger: quiet})
	if err != nil {
		return fmt.Errorf("db copy: open --from: %w", err)
	}
	defer src.Close()
	dst, err := store.Open(ctx, store.Config{DSN: *to, Logger: quiet})
	if err != nil {
		return fmt.Errorf("db copy: open --to: %w", err)
	}
	defer dst.Close()
	fmt.Fprintf(stdout, "copying %s into %s\n", store.RedactDSN(*from), store.RedactDSN(*to))

	bars := !*noProgress && isTerminal(stdout)
	var bar *progressbar.ProgressBar
	table := ""
	progress := func(t string, done, total int64) {
		if t != table {
			if bar != nil {
				_ = bar.Finish()
				fmt.Fprintln(stdout)
			}
			table, bar = t, nil
			if bars {
				bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(stdout),
					progressbar.OptionSetDescription(fmt.Sprintf("%-16s", t)), progressbar.OptionShowCount(),
					progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionFullWidth())
			}
		}
		if bar != nil {
			_ = bar.Set64(done)
		}
	}
	start := time.Now()
	rep, err := store.Copy(ctx, src, dst, *batch, progress)
	if bar != nil {
		_ = bar.Finish()
		fmt.Fprintln(stdout)
	}
	if err != nil {
		return fmt.Errorf("db copy: %w (run the same command again to resume)", err)
	}
	var short []string
	fmt.Fprintf(stdout, "%-18s %12s %12s %12s\n", "table", "source", "copied now", "destination")
	for _, c := range rep.Tables {
		mark := ""
		if !c.Verified {
			mark = "  SHORT"
			short = append(short, c.Table)
		}
		fmt.Fprintf(stdout, "%-18s %12d %12d %12d%s\n", c.Table, c.Source, c.Copied, c.Dest, mark)
	}
	fmt.Fprintf(stdout, "unfinished jobs copied: %d\ndone in %s\n", rep.Jobs, time.Since(start).Round(time.Millisecond))
	if len(short) > 0 {
		return fmt.Errorf("db copy: the destination has fewer rows than the source in %s", strings.Join(short, ", "))
	}
	return nil
}
