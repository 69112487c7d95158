package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/control"
)

func (e *env) consumersCommand() *cobra.Command {
	cmd, cf := e.group("consumers", "Create, list, inspect, change and delete consumers")
	cmd.AddCommand(consumersCreate(cf), consumersList(cf), consumersGet(cf), consumersUpdate(cf), consumersDelete(cf))
	return cmd
}

type consumerSettings struct {
	name, email, plan, metadata string
	limitFlags
}

func (s *consumerSettings) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&s.name, "name", "", "name")
	f.StringVar(&s.email, "email", "", "email address")
	f.StringVar(&s.plan, "plan", "", "plan of the consumer's keys that name none")
	s.limitFlags.add(cmd, "window shared by all the consumer's keys, name=limit/period (repeatable)",
		"quota shared by all the consumer's keys, limit/period (none: no quota)")
	f.StringVar(&s.metadata, "metadata", "", "metadata as a JSON object")
}

func consumersCreate(cf *clientFlags) *cobra.Command {
	var s consumerSettings
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a consumer",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := control.ConsumerCreate{Name: s.name, Email: s.email, Plan: s.plan}
			var err error
			if in.RateLimits, in.Quota, err = s.values(); err != nil {
				return err
			}
			if in.Metadata, err = parseMetadata(s.metadata); err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			out, err := c.CreateConsumer(cmd.Context(), in)
			if err != nil {
				return apiError(err)
			}
			return cf.printConsumer(out)
		},
	}
	s.add(cmd)
	return cmd
}

func (cf *clientFlags) printConsumer(c *keygate.Consumer) error {
	if cf.json {
		return cf.printJSON(c)
	}
	return cf.fields([][2]string{
		{"id", c.ID}, {"name", orDash(c.Name)}, {"email", orDash(c.Email)}, {"plan", orDash(c.Plan)},
		{"rate limits", windows(c.RateLimits)}, {"quota", quota(c.Quota)},
		{"created", c.CreatedAt.UTC().Format(time.RFC3339)}, {"metadata", metadata(c.Metadata)},
	})
}

func consumersList(cf *clientFlags) *cobra.Command {
	var lf listFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List consumers, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			page, err := c.Consumers(cmd.Context(), lf.params())
			if err != nil {
				return apiError(err)
			}
			return printPage(cf, page, []string{"ID", "NAME", "EMAIL", "PLAN", "CREATED"}, func(x *keygate.Consumer) []string {
				return []string{x.ID, orDash(x.Name), orDash(x.Email), orDash(x.Plan), x.CreatedAt.UTC().Format(time.RFC3339)}
			})
		},
	}
	lf.add(cmd)
	return cmd
}

func consumersGet(cf *clientFlags) *cobra.Command {
	return getCommand(cf, "get ID", "Show a consumer", (*admin.Client).Consumer, cf.printConsumer)
}

func consumersUpdate(cf *clientFlags) *cobra.Command {
	var s consumerSettings
	cmd := &cobra.Command{
		Use:   "update ID",
		Short: "Change a consumer: only the flags given change (an empty value or none clears)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			var p control.ConsumerPatch
			if f.Changed("name") {
				p.Name = keygate.Some(s.name)
			}
			if f.Changed("email") {
				p.Email = keygate.Some(s.email)
			}
			if f.Changed("plan") {
				p.Plan = optString(s.plan)
			}
			var err error
			if p.RateLimits, p.Quota, err = s.patch(cmd); err != nil {
				return err
			}
			if f.Changed("metadata") {
				m, err := parseMetadata(s.metadata)
				if err != nil {
					return err
				}
				if m == nil {
					p.Metadata = keygate.Opt[map[string]any]{Set: true, Null: true}
				} else {
					p.Metadata = keygate.Some(m)
				}
			}
			if len(admin.PatchBody(p)) == 0 {
				return fmt.Errorf("nothing to change: give at least one flag (see --help)")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			out, err := c.UpdateConsumer(cmd.Context(), args[0], p)
			if err != nil {
				return apiError(err)
			}
			return cf.printConsumer(out)
		},
	}
	s.add(cmd)
	return cmd
}

func consumersDelete(cf *clientFlags) *cobra.Command {
	var purge bool
	cmd := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a consumer and revoke all its keys",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			out, err := c.DeleteConsumer(cmd.Context(), args[0], purge)
			if err != nil {
				return apiError(err)
			}
			if cf.json {
				return cf.printJSON(out)
			}
			_, err = fmt.Fprintf(cf.e.stdout, "deleted consumer %s; its keys are revoked\n", out.ID)
			return err
		},
	}
	cmd.Flags().BoolVar(&purge, "purge", false, "also erase name and email from storage")
	return cmd
}
