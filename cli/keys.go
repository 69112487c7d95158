package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/control"
)

func (e *env) keysCommand() *cobra.Command {
	cmd, cf := e.group("keys", "Create, list, inspect, change, revoke and rotate API keys")
	cmd.AddCommand(keysCreate(cf), keysList(cf), keysGet(cf), keysUpdate(cf), keysRevoke(cf), keysRotate(cf))
	return cmd
}

// keySettings are the flags shared by keys create and keys update.
type keySettings struct {
	name, plan, expiresAt, maxAge, metadata string
	scopes, ipAllow, referrerAllow          []string
	limitFlags
}

func (s *keySettings) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&s.name, "name", "", "name of the key")
	f.StringSliceVar(&s.scopes, "scope", nil, "granted scope resource:action (repeat or comma-separate)")
	f.StringVar(&s.plan, "plan", "", "plan name (default: the consumer's)")
	s.limitFlags.add(cmd, "rate-limit window name=limit/period, e.g. minute=100/1m (repeatable)",
		"quota limit/period, e.g. 5000/month (none: no quota)")
	f.StringSliceVar(&s.ipAllow, "ip-allow", nil, "allowed client IP or CIDR (repeatable)")
	f.StringSliceVar(&s.referrerAllow, "referrer-allow", nil, "allowed referrer origin, e.g. https://app.example.com (repeatable)")
	f.StringVar(&s.expiresAt, "expires-at", "", "expiry as RFC 3339 (none: never)")
	f.StringVar(&s.maxAge, "max-age", "", "advisory rotation age, e.g. 90d (none: the plan's)")
	f.StringVar(&s.metadata, "metadata", "", "metadata as a JSON object")
}

func keysCreate(cf *clientFlags) *cobra.Command {
	var s keySettings
	var consumer, kind, envName, ttl string
	cmd := &cobra.Command{
		Use:   "create --consumer ID",
		Short: "Create a key (its plaintext is printed once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if consumer == "" {
				return fmt.Errorf("--consumer is required: every key has an owner")
			}
			in := control.KeyCreate{ConsumerID: consumer, Name: s.name, Kind: kind, Env: envName,
				Scopes: splitList(s.scopes), Plan: s.plan, IPAllow: splitList(s.ipAllow), ReferrerAllow: splitList(s.referrerAllow)}
			var err error
			if in.RateLimits, in.Quota, err = s.values(); err != nil {
				return err
			}
			if in.ExpiresAt, err = parseTimePtr("expires-at", s.expiresAt); err != nil {
				return err
			}
			if in.TTL, err = parseDurationPtr("ttl", ttl); err != nil {
				return err
			}
			if in.MaxAge, err = parseDurationPtr("max-age", s.maxAge); err != nil {
				return err
			}
			if in.Metadata, err = parseMetadata(s.metadata); err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			k, err := c.CreateKey(cmd.Context(), in)
			if err != nil {
				return apiError(err)
			}
			return cf.printNewKey(k)
		},
	}
	cmd.Flags().StringVar(&consumer, "consumer", "", "id of the consumer who owns the key (required)")
	cmd.Flags().StringVar(&kind, "kind", "", "secret or publishable (default secret)")
	cmd.Flags().StringVar(&envName, "env", "", "live or test (default live)")
	cmd.Flags().StringVar(&ttl, "ttl", "", "lifetime of a temporary key, e.g. 15m")
	s.add(cmd)
	return cmd
}

func (cf *clientFlags) printNewKey(k *admin.KeyWithSecret) error {
	if cf.json {
		return cf.printJSON(k)
	}
	if err := cf.fields(append(keyFields(&k.Key), [2]string{"key", k.Plaintext})); err != nil {
		return err
	}
	fmt.Fprintln(cf.e.stderr, "Store this key now: it is not shown again.")
	return nil
}

func keysList(cf *clientFlags) *cobra.Command {
	var lf listFlags
	var consumer, status string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List keys, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			page, err := c.Keys(cmd.Context(), keygate.KeyFilter{ListParams: lf.params(), ConsumerID: consumer, Status: status})
			if err != nil {
				return apiError(err)
			}
			return printPage(cf, page, []string{"ID", "NAME", "START", "STATUS", "CONSUMER", "PLAN", "SCOPES", "EXPIRES", "CREATED"}, func(k *keygate.Key) []string {
				return []string{k.ID, orDash(k.Name), k.Start, k.Status, k.ConsumerID, orDash(k.Plan),
					list(k.Scopes), timeOrDash(k.ExpiresAt), k.CreatedAt.UTC().Format(time.RFC3339)}
			})
		},
	}
	cmd.Flags().StringVar(&consumer, "consumer", "", "only this consumer's keys")
	cmd.Flags().StringVar(&status, "status", "", "only keys with this status: active, disabled, expired or revoked")
	lf.add(cmd)
	return cmd
}

func keysGet(cf *clientFlags) *cobra.Command {
	return getCommand(cf, "get ID", "Show a key", (*admin.Client).Key, func(k *keygate.Key) error {
		if cf.json {
			return cf.printJSON(k)
		}
		return cf.printKey(k)
	})
}

func (cf *clientFlags) printKey(k *keygate.Key) error { return cf.fields(keyFields(k)) }

func keyFields(k *keygate.Key) [][2]string {
	return [][2]string{
		{"id", k.ID}, {"name", orDash(k.Name)}, {"consumer", k.ConsumerID}, {"kind", k.Kind}, {"env", k.Env},
		{"start", k.Start}, {"status", k.Status}, {"scopes", list(k.Scopes)}, {"plan", orDash(k.Plan)},
		{"rate limits", windows(k.RateLimits)}, {"quota", quota(k.Quota)},
		{"ip allow", list(k.IPAllow)}, {"referrer allow", list(k.ReferrerAllow)},
		{"expires at", timeOrDash(k.ExpiresAt)}, {"revoked at", timeOrDash(k.RevokedAt)},
		{"revoke reason", strPtrOrDash(k.RevokeReason)}, {"rotated from", strPtrOrDash(k.RotatedFrom)},
		{"rotated to", strPtrOrDash(k.RotatedTo)}, {"rotation due", fmt.Sprint(k.RotationDue)},
		{"last used", timeOrDash(k.LastUsedAt)}, {"created", k.CreatedAt.UTC().Format(time.RFC3339)},
		{"metadata", metadata(k.Metadata)},
	}
}

func keysUpdate(cf *clientFlags) *cobra.Command {
	var s keySettings
	var status string
	cmd := &cobra.Command{
		Use:   "update ID",
		Short: "Change a key: only the flags given change (an empty value or none clears)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			var p control.KeyPatch
			if f.Changed("name") {
				p.Name = keygate.Some(s.name)
			}
			if f.Changed("scope") {
				p.Scopes = keygate.Some(splitList(s.scopes))
			}
			if f.Changed("plan") {
				p.Plan = optString(s.plan)
			}
			var err error
			if p.RateLimits, p.Quota, err = s.patch(cmd); err != nil {
				return err
			}
			if f.Changed("ip-allow") {
				p.IPAllow = keygate.Some(splitList(s.ipAllow))
			}
			if f.Changed("referrer-allow") {
				p.ReferrerAllow = keygate.Some(splitList(s.referrerAllow))
			}
			if f.Changed("expires-at") {
				t, err := parseTimePtr("expires-at", s.expiresAt)
				if err != nil {
					return err
				}
				p.ExpiresAt = optPtr(t)
			}
			if f.Changed("max-age") {
				d, err := parseDurationPtr("max-age", s.maxAge)
				if err != nil {
					return err
				}
				p.MaxAge = optPtr(d)
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
			if f.Changed("status") {
				p.Status = keygate.Some(status)
			}
			if len(admin.PatchBody(p)) == 0 {
				return fmt.Errorf("nothing to change: give at least one flag (see --help)")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			k, err := c.UpdateKey(cmd.Context(), args[0], p)
			if err != nil {
				return apiError(err)
			}
			if cf.json {
				return cf.printJSON(k)
			}
			return cf.printKey(k)
		},
	}
	s.add(cmd)
	cmd.Flags().StringVar(&status, "status", "", "active or disabled")
	return cmd
}

// optString is a set Opt of s, or null for "" and "none".
func optString(s string) keygate.Opt[string] {
	if s == "" || s == "none" {
		return keygate.Opt[string]{Set: true, Null: true}
	}
	return keygate.Some(s)
}

// optPtr is a set Opt of v, null when v is nil.
func optPtr[T any](v *T) keygate.Opt[*T] {
	if v == nil {
		return keygate.Opt[*T]{Set: true, Null: true}
	}
	return keygate.Some(v)
}

func keysRevoke(cf *clientFlags) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a key at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			k, err := c.RevokeKey(cmd.Context(), args[0], reason)
			if err != nil {
				return apiError(err)
			}
			if cf.json {
				return cf.printJSON(k)
			}
			return cf.printKey(k)
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the key is revoked (kept in the key and the audit log)")
	return cmd
}

func keysRotate(cf *clientFlags) *cobra.Command {
	var grace string
	cmd := &cobra.Command{
		Use:   "rotate ID",
		Short: "Rotate a key: print its successor's plaintext once; the old key works for the grace period",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var g *time.Duration
			if cmd.Flags().Changed("grace-period") {
				d, err := keygate.ParseDuration(grace)
				if err != nil {
					return fmt.Errorf("--grace-period: %v", err)
				}
				g = &d
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			k, err := c.RotateKey(cmd.Context(), args[0], g)
			if err != nil {
				return apiError(err)
			}
			return cf.printNewKey(k)
		},
	}
	cmd.Flags().StringVar(&grace, "grace-period", "24h", "how long the old key keeps working (0s: it expires now)")
	return cmd
}
