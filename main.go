// Command pendinglink links a brand's WeChat fans to the customers its dealers
// add in WeCom. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/pendinglink/pendinglink/store"
)

// version is set at build time with -ldflags "-X main.version=…"; otherwise
// the module version from the build info is used.
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "pendinglink:", err)
		os.Exit(1)
	}
}

const usage = `pendinglink links a brand's WeChat fans to its dealers' WeCom customers.

Usage:
  pendinglink demo [flags]       run the whole mission against a fake WeCom and report
  pendinglink serve [flags]      run the callback receiver, pipeline and API
  pendinglink check [flags]      test the deployment (WeCom, database, callback URL, webhook) with serve's configuration
  pendinglink fans import FILE   send fans (CSV or JSON lines) to a running server for registration
  pendinglink reconcile [flags]  ask a running server to find customers it missed (unionid_to_external_userid)
  pendinglink retry events|fans  re-drive failed events or fans on a running server
  pendinglink db copy [flags]    copy a SQLite database into PostgreSQL (resumable, verified by counts)
  pendinglink loadtest [flags]   send signed callbacks at a rate and report ack latency
  pendinglink version            print the version

Run "pendinglink <command> -h" for a command's flags.
`

// run dispatches a subcommand. It takes its environment as arguments so tests
// can run the whole program in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("missing command")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return serve(ctx, rest, getenv, stdout, stderr)
	case "check":
		return checkCommand(ctx, rest, getenv, stdout, stderr, checkOptions{})
	case "demo":
		return demoCommand(ctx, rest, getenv, stdout, stderr)
	case "fans":
		return fansCommand(ctx, rest, getenv, stdout, stderr)
	case "reconcile":
		return reconcileCommand(ctx, rest, getenv, stdout, stderr)
	case "db":
		return dbCommand(ctx, rest, stdout, stderr)
	case "retry":
		return retryCommand(ctx, rest, getenv, stdout, stderr)
	case "loadtest":
		return loadtest(ctx, rest, getenv, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "pendinglink", buildVersion())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		// Redacted: a DSN put where the command goes keeps its password.
		return fmt.Errorf("unknown command %q", store.RedactDSN(cmd))
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
