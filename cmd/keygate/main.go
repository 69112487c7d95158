// Command keygate is the API key manager and gateway: `keygate serve` runs it; the other
// commands talk to a running server's admin API (SPEC §9).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/cli"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr, nil)
	os.Exit(exitCode(err, os.Stderr))
}

// exitError carries an exit code and a one-line message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// exitCode prints err as one line and returns the process exit code: 0 for nil, 2 for bad
// settings, 1 otherwise.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, "keygate: "+ee.msg)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "keygate: "+err.Error())
	return 1
}

// run is the whole program. Tests call it with their own arguments, environment and writers; a
// non-nil ready channel receives the serve command's bound addresses once it listens.
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer, ready chan<- Addrs) error {
	getenv := func(k string) string { v, _ := lookupEnv(k); return v }
	root := &cobra.Command{
		Use:           "keygate",
		Short:         "API key manager and gateway",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(serveCommand(lookupEnv, stderr, ready), migrateCommand(lookupEnv), versionCommand(stdout))
	cli.AddCommands(root, stdout, stderr, getenv)
	sigctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return root.ExecuteContext(sigctx)
}

func versionCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(stdout, "keygate "+version)
			return nil
		},
	}
}
