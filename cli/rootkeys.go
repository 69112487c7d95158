package cli

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/control"
	"github.com/keygate/keygate/keys"
)

// rootKeyCommand is `root-key generate`: it works offline, without a server.
func (e *env) rootKeyCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "root-key", Short: "Offline root-key tools", SilenceUsage: true, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	var asJSON bool
	gen := &cobra.Command{
		Use:   "generate",
		Short: "Print a new root key (offline; use it as KEYGATE_ROOT_KEY at the server's start)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			prefix := e.getenv("KEYGATE_KEY_PREFIX")
			if prefix == "" {
				prefix = keys.DefaultPrefix
			}
			if !keys.ValidPrefix(prefix) {
				return fmt.Errorf("KEYGATE_KEY_PREFIX %q must be 1 to 16 characters of [a-z0-9]", prefix)
			}
			k, err := keys.GenerateRoot(prefix)
			if err != nil {
				return err
			}
			if asJSON {
				_, err = fmt.Fprintf(e.stdout, "{\"key\":%s}\n", strconv.Quote(k))
				return err
			}
			_, err = fmt.Fprintln(e.stdout, k)
			return err
		},
	}
	gen.Flags().BoolVar(&asJSON, "json", false, "print {\"key\": …}")
	cmd.AddCommand(gen)
	return cmd
}

func (e *env) rootKeysCommand() *cobra.Command {
	cmd, cf := e.group("root-keys", "Create, list and revoke root keys of the admin API")
	cmd.AddCommand(rootKeysCreate(cf), rootKeysList(cf), rootKeysRevoke(cf))
	return cmd
}

func rootKeysCreate(cf *clientFlags) *cobra.Command {
	var name string
	var perms []string
	cmd := &cobra.Command{
		Use:   "create --permission P",
		Short: "Create a root key (its plaintext is printed once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ps := splitList(perms)
			if len(ps) == 0 {
				return errors.New("--permission is required (e.g. keys:read, or admin)")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			rk, err := c.CreateRootKey(cmd.Context(), control.RootKeyCreate{Name: name, Permissions: ps})
			if err != nil {
				return apiError(err)
			}
			if cf.json {
				return cf.printJSON(rk)
			}
			if err := cf.fields([][2]string{{"id", rk.ID}, {"name", orDash(rk.Name)}, {"start", rk.Start},
				{"permissions", list(rk.Permissions)}, {"key", rk.Plaintext}}); err != nil {
				return err
			}
			fmt.Fprintln(cf.e.stderr, "Store this key now: it is not shown again.")
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name of the root key")
	cmd.Flags().StringSliceVar(&perms, "permission", nil, "permission to grant (repeat or comma-separate); only ones you hold")
	return cmd
}

func rootKeysList(cf *clientFlags) *cobra.Command {
	var lf listFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List root keys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			page, err := c.RootKeys(cmd.Context(), lf.params())
			if err != nil {
				return apiError(err)
			}
			return printPage(cf, page, []string{"ID", "NAME", "START", "PERMISSIONS", "CREATED", "REVOKED", "LAST USED"}, func(r *keygate.RootKey) []string {
				return []string{r.ID, orDash(r.Name), r.Start, list(r.Permissions),
					r.CreatedAt.UTC().Format(time.RFC3339), timeOrDash(r.RevokedAt), timeOrDash(r.LastUsedAt)}
			})
		},
	}
	lf.add(cmd)
	return cmd
}

func rootKeysRevoke(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a root key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			rk, err := c.RevokeRootKey(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			if cf.json {
				return cf.printJSON(rk)
			}
			_, err = fmt.Fprintf(cf.e.stdout, "revoked root key %s at %s\n", rk.ID, timeOrDash(rk.RevokedAt))
			return err
		},
	}
}

func (e *env) auditCommand() *cobra.Command {
	cmd, cf := e.group("audit", "Check the audit log")
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Check the audit chain through the admin API (exit 1 when it is broken)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			v, err := c.VerifyAudit(cmd.Context())
			if err != nil {
				return apiError(err)
			}
			if cf.json {
				if err := cf.printJSON(v); err != nil {
					return err
				}
			} else {
				broken := "-"
				if v.BrokenAt != nil {
					broken = strconv.FormatInt(*v.BrokenAt, 10)
				}
				if err := cf.table([]string{"OK", "ENTRIES", "BROKEN AT"},
					[][]string{{strconv.FormatBool(v.OK), strconv.FormatInt(v.Entries, 10), broken}}); err != nil {
					return err
				}
			}
			if !v.OK {
				if v.BrokenAt != nil {
					return fmt.Errorf("the audit chain is broken at seq %d", *v.BrokenAt)
				}
				return errors.New("the audit chain is broken")
			}
			return nil
		},
	}
	cmd.AddCommand(verify)
	return cmd
}
