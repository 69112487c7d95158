// Package cli holds keygate's client commands (SPEC §9): keys, consumers, plans, root keys and
// the audit check, which talk to a running server's admin API through admin.Client, and the
// offline `root-key generate`. cmd/keygate adds them to its root command with AddCommands.
//
// Every client command takes --server (default $KEYGATE_SERVER, else http://127.0.0.1:8081),
// reads the root key from $KEYGATE_TOKEN, prints aligned tables for people and, with --json,
// the API's JSON for scripts. Errors are returned as one line (the caller prints it and exits
// non-zero); usage is not printed for them.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/admin"
)

// DefaultServer is the admin API address used when neither --server nor KEYGATE_SERVER is set.
const DefaultServer = "http://127.0.0.1:8081"

// AddCommands adds the client commands and `root-key generate` to root.
func AddCommands(root *cobra.Command, stdout, stderr io.Writer, getenv func(string) string) {
	e := &env{stdout: stdout, stderr: stderr, getenv: getenv}
	root.AddCommand(e.keysCommand(), e.consumersCommand(), e.plansCommand(), e.rootKeyCommand(),
		e.rootKeysCommand(), e.auditCommand())
}

type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

// clientFlags are the flags every client command group shares.
type clientFlags struct {
	server string
	json   bool
	e      *env
}

func (e *env) group(use, short string) (*cobra.Command, *clientFlags) {
	cmd := &cobra.Command{Use: use, Short: short, SilenceUsage: true, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() }}
	cf := &clientFlags{e: e}
	server := e.getenv("KEYGATE_SERVER")
	if server == "" {
		server = DefaultServer
	}
	cmd.PersistentFlags().StringVar(&cf.server, "server", server, "admin API base URL (env KEYGATE_SERVER)")
	cmd.PersistentFlags().BoolVar(&cf.json, "json", false, "print JSON for scripts instead of tables")
	return cmd, cf
}

// client returns a client of the admin API, or an error when no token is set.
func (cf *clientFlags) client() (*admin.Client, error) {
	token := strings.TrimSpace(cf.e.getenv("KEYGATE_TOKEN"))
	if token == "" {
		return nil, errors.New("KEYGATE_TOKEN is not set: export a root key (see `keygate root-key generate`)")
	}
	if !strings.HasPrefix(cf.server, "http://") && !strings.HasPrefix(cf.server, "https://") {
		return nil, fmt.Errorf("--server %q must be an http:// or https:// URL", cf.server)
	}
	return admin.NewClient(cf.server, token), nil
}

// apiError makes an error of the admin API one readable line.
func apiError(err error) error {
	var ke *keygate.Error
	if errors.As(err, &ke) {
		return fmt.Errorf("%s (%s)", ke.Message, ke.Code)
	}
	return err
}

func (cf *clientFlags) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(cf.e.stdout, string(b))
	return err
}

// table prints rows aligned in columns.
func (cf *clientFlags) table(header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(cf.e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// fields prints one object as "NAME  value" lines.
func (cf *clientFlags) fields(pairs [][2]string) error {
	tw := tabwriter.NewWriter(cf.e.stdout, 0, 4, 2, ' ', 0)
	for _, p := range pairs {
		fmt.Fprintf(tw, "%s\t%s\n", p[0], p[1])
	}
	return tw.Flush()
}

// more tells people how to get the next page.
// getCommand is a "get ID" command: fetch one object through the admin API and print it.
func getCommand[T any](cf *clientFlags, use, short string, fetch func(*admin.Client, context.Context, string) (T, error), print func(T) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			out, err := fetch(c, cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			return print(out)
		},
	}
}

// printPage prints a list answer: JSON for scripts, else a table of one row per item and, on
// stderr, the cursor of the next page.
func printPage[T any](cf *clientFlags, page *admin.List[T], header []string, row func(*T) []string) error {
	if cf.json {
		return cf.printJSON(page)
	}
	rows := make([][]string, 0, len(page.Data))
	for i := range page.Data {
		rows = append(rows, row(&page.Data[i]))
	}
	if err := cf.table(header, rows); err != nil {
		return err
	}
	cf.more(page.NextCursor)
	return nil
}

func (cf *clientFlags) more(next *string) {
	if next != nil && *next != "" {
		fmt.Fprintf(cf.e.stderr, "more: --cursor %s\n", *next)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func strPtrOrDash(s *string) string {
	if s == nil {
		return "-"
	}
	return orDash(*s)
}

func windows(ws []keygate.Window) string {
	if len(ws) == 0 {
		return "-"
	}
	parts := make([]string, len(ws))
	for i, w := range ws {
		parts[i] = fmt.Sprintf("%s=%d/%s", w.Name, w.Limit, shortDuration(w.Period))
	}
	return strings.Join(parts, ",")
}

// shortDuration writes "1m" rather than Go's "1m0s".
func shortDuration(d keygate.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func quota(q *keygate.Quota) string {
	if q == nil {
		return "-"
	}
	s := fmt.Sprintf("%d/%s", q.Limit, q.Period)
	if q.Used != nil {
		s += fmt.Sprintf(" (used %d", *q.Used)
		if q.ResetsAt != nil {
			s += ", resets " + q.ResetsAt.UTC().Format(time.RFC3339)
		}
		s += ")"
	}
	return s
}

func list(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

func metadata(m map[string]any) string {
	if len(m) == 0 {
		return "-"
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// --- flag values ---

// parseWindow reads "name=limit/period", e.g. "burst=5/1s".
func parseWindow(s string) (keygate.Window, error) {
	name, rest, ok := strings.Cut(s, "=")
	lim, per, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 {
		return keygate.Window{}, fmt.Errorf("rate limit %q: want name=limit/period, e.g. minute=100/1m", s)
	}
	n, err := strconv.ParseInt(lim, 10, 64)
	if err != nil {
		return keygate.Window{}, fmt.Errorf("rate limit %q: limit %q is not an integer", s, lim)
	}
	d, err := keygate.ParseDuration(per)
	if err != nil {
		return keygate.Window{}, fmt.Errorf("rate limit %q: %v", s, err)
	}
	return keygate.Window{Name: name, Limit: n, Period: keygate.Duration(d)}, nil
}

// limitFlags are the --rate-limit and --quota flags that consumers, keys and plans share.
type limitFlags struct {
	rateLimits []string
	quota      string
}

func (l *limitFlags) add(cmd *cobra.Command, windowHelp, quotaHelp string) {
	cmd.Flags().StringSliceVar(&l.rateLimits, "rate-limit", nil, windowHelp)
	cmd.Flags().StringVar(&l.quota, "quota", "", quotaHelp)
}

// values parses both flags (a create).
func (l *limitFlags) values() ([]keygate.Window, *keygate.Quota, error) {
	ws, err := parseWindows(l.rateLimits)
	if err != nil {
		return nil, nil, err
	}
	q, err := parseQuota(l.quota)
	return ws, q, err
}

// patch parses the flags given on cmd's command line (an update); the others stay unset.
func (l *limitFlags) patch(cmd *cobra.Command) (ws keygate.Opt[[]keygate.Window], q keygate.Opt[*keygate.Quota], err error) {
	if cmd.Flags().Changed("rate-limit") {
		w, err := parseWindows(l.rateLimits)
		if err != nil {
			return ws, q, err
		}
		ws = keygate.Some(w)
	}
	if cmd.Flags().Changed("quota") {
		v, err := parseQuota(l.quota)
		if err != nil {
			return ws, q, err
		}
		q = optPtr(v)
	}
	return ws, q, nil
}

func parseWindows(ss []string) ([]keygate.Window, error) {
	out := []keygate.Window{}
	for _, s := range ss {
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part == "" {
				continue
			}
			w, err := parseWindow(part)
			if err != nil {
				return nil, err
			}
			out = append(out, w)
		}
	}
	return out, nil
}

// parseQuota reads "limit/period", e.g. "5000/month"; "none" or "" is no quota.
func parseQuota(s string) (*keygate.Quota, error) {
	if s == "" || s == "none" {
		return nil, nil
	}
	lim, per, ok := strings.Cut(s, "/")
	n, err := strconv.ParseInt(lim, 10, 64)
	if !ok || err != nil {
		return nil, fmt.Errorf("quota %q: want limit/period, e.g. 5000/month", s)
	}
	return &keygate.Quota{Limit: n, Period: per}, nil
}

// parseDurationPtr reads a duration; "none" or "" is nil.
func parseDurationPtr(flag, s string) (*keygate.Duration, error) {
	if s == "" || s == "none" {
		return nil, nil
	}
	d, err := keygate.ParseDuration(s)
	if err != nil {
		return nil, fmt.Errorf("--%s: %v", flag, err)
	}
	kd := keygate.Duration(d)
	return &kd, nil
}

// parseTimePtr reads an RFC 3339 time; "none" or "" is nil.
func parseTimePtr(flag, s string) (*time.Time, error) {
	if s == "" || s == "none" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil, fmt.Errorf("--%s: %q is not an RFC 3339 time like 2026-12-31T00:00:00Z", flag, s)
	}
	t = t.UTC()
	return &t, nil
}

func parseMetadata(s string) (map[string]any, error) {
	if s == "" {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil || m == nil {
		return nil, fmt.Errorf("--metadata must be a JSON object, e.g. '{\"team\":\"mobile\"}'")
	}
	return m, nil
}

// splitList flattens repeated and comma-separated flag values.
func splitList(ss []string) []string {
	out := []string{}
	for _, s := range ss {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// listFlags are the paging flags of list commands.
type listFlags struct {
	limit  int
	cursor string
}

func (l *listFlags) add(cmd *cobra.Command) {
	cmd.Flags().IntVar(&l.limit, "limit", 0, "page size (server default 50, at most 1000)")
	cmd.Flags().StringVar(&l.cursor, "cursor", "", "cursor of the next page, from the previous page")
}

func (l *listFlags) params() keygate.ListParams {
	return keygate.ListParams{Limit: l.limit, Cursor: l.cursor}
}
