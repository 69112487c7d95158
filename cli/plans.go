package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/control"
)

func (e *env) plansCommand() *cobra.Command {
	cmd, cf := e.group("plans", "Create, list, inspect, change and delete plans")
	cmd.AddCommand(plansCreate(cf), plansList(cf), plansGet(cf), plansUpdate(cf), plansDelete(cf))
	return cmd
}

type planSettings struct {
	maxAge        string
	scopesAllowed []string
	limitFlags
}

func (s *planSettings) add(cmd *cobra.Command) {
	f := cmd.Flags()
	s.limitFlags.add(cmd, "window name=limit/period, e.g. minute=100/1m (repeatable)",
		"quota per key, limit/period, e.g. 5000/month (none: no quota)")
	f.StringSliceVar(&s.scopesAllowed, "scopes-allowed", nil, "ceiling of the scopes of keys on the plan (repeatable)")
	f.StringVar(&s.maxAge, "max-age", "", "advisory rotation age, e.g. 90d (none: none)")
}

func plansCreate(cf *clientFlags) *cobra.Command {
	var s planSettings
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a plan",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := control.PlanCreate{Name: args[0]}
			var err error
			if in.RateLimits, in.Quota, err = s.values(); err != nil {
				return err
			}
			if cmd.Flags().Changed("scopes-allowed") {
				in.ScopesAllowed = splitList(s.scopesAllowed)
			}
			if in.MaxAge, err = parseDurationPtr("max-age", s.maxAge); err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			p, err := c.CreatePlan(cmd.Context(), in)
			if err != nil {
				return apiError(err)
			}
			return cf.printPlan(p)
		},
	}
	s.add(cmd)
	return cmd
}

func maxAge(d *keygate.Duration) string {
	if d == nil {
		return "-"
	}
	return shortDuration(*d)
}

// scopesAllowed shows a plan's scope ceiling; none means any scope.
func scopesAllowed(s []string) string {
	if s == nil {
		return "(any)"
	}
	return list(s)
}

func (cf *clientFlags) printPlan(p *keygate.Plan) error {
	if cf.json {
		return cf.printJSON(p)
	}
	scopes := scopesAllowed(p.ScopesAllowed)
	return cf.fields([][2]string{
		{"name", p.Name}, {"rate limits", windows(p.RateLimits)}, {"quota", quota(p.Quota)},
		{"scopes allowed", scopes}, {"max age", maxAge(p.MaxAge)}, {"managed by", orDash(p.ManagedBy)},
	})
}

func plansList(cf *clientFlags) *cobra.Command {
	var lf listFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List plans",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			page, err := c.Plans(cmd.Context(), lf.params())
			if err != nil {
				return apiError(err)
			}
			return printPage(cf, page, []string{"NAME", "RATE LIMITS", "QUOTA", "SCOPES ALLOWED", "MAX AGE", "MANAGED BY"}, func(p *keygate.Plan) []string {
				return []string{p.Name, windows(p.RateLimits), quota(p.Quota), scopesAllowed(p.ScopesAllowed), maxAge(p.MaxAge), orDash(p.ManagedBy)}
			})
		},
	}
	lf.add(cmd)
	return cmd
}

func plansGet(cf *clientFlags) *cobra.Command {
	return getCommand(cf, "get NAME", "Show a plan", (*admin.Client).Plan, cf.printPlan)
}

func plansUpdate(cf *clientFlags) *cobra.Command {
	var s planSettings
	cmd := &cobra.Command{
		Use:   "update NAME",
		Short: "Change a plan: only the flags given change (an empty value or none clears)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			var p control.PlanPatch
			var err error
			if p.RateLimits, p.Quota, err = s.patch(cmd); err != nil {
				return err
			}
			if f.Changed("scopes-allowed") {
				if sc := splitList(s.scopesAllowed); len(sc) == 0 {
					p.ScopesAllowed = keygate.Opt[[]string]{Set: true, Null: true}
				} else {
					p.ScopesAllowed = keygate.Some(sc)
				}
			}
			if f.Changed("max-age") {
				d, err := parseDurationPtr("max-age", s.maxAge)
				if err != nil {
					return err
				}
				p.MaxAge = optPtr(d)
			}
			if len(admin.PatchBody(p)) == 0 {
				return fmt.Errorf("nothing to change: give at least one flag (see --help)")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			out, err := c.UpdatePlan(cmd.Context(), args[0], p)
			if err != nil {
				return apiError(err)
			}
			return cf.printPlan(out)
		},
	}
	s.add(cmd)
	return cmd
}

func plansDelete(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a plan that no consumer or key uses",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			p, err := c.DeletePlan(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			if cf.json {
				return cf.printJSON(p)
			}
			_, err = fmt.Fprintf(cf.e.stdout, "deleted plan %s\n", p.Name)
			return err
		},
	}
}
