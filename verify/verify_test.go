package verify

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/keys"
	"github.com/keygate/keygate/ratelimit"
)

// fakeStore serves keys by hash and counts lookups. Methods the verifier does not call panic
// through the nil embedded interface.
type fakeStore struct {
	keygate.Reader
	keys      map[string]*keygate.Key
	consumers map[string]*keygate.Consumer
	plans     map[string]*keygate.Plan
	lookups   atomic.Int64
	fail      error
}

func (f *fakeStore) KeyByHash(_ context.Context, h []byte) (*keygate.Key, error) {
	f.lookups.Add(1)
	if f.fail != nil {
		return nil, f.fail
	}
	k, ok := f.keys[string(h)]
	if !ok {
		return nil, keygate.Errorf(keygate.CodeNotFound, "key not found")
	}
	cp := *k
	return &cp, nil
}

func (f *fakeStore) Consumer(_ context.Context, id string) (*keygate.Consumer, error) {
	if c, ok := f.consumers[id]; ok {
		return c, nil
	}
	return nil, keygate.Errorf(keygate.CodeNotFound, "consumer not found")
}

func (f *fakeStore) Plan(_ context.Context, name string) (*keygate.Plan, error) {
	if p, ok := f.plans[name]; ok {
		return p, nil
	}
	return nil, keygate.Errorf(keygate.CodeNotFound, "plan not found")
}

func newFake() *fakeStore {
	return &fakeStore{keys: map[string]*keygate.Key{},
		consumers: map[string]*keygate.Consumer{"con_1": {ID: "con_1", Plan: "gold"}},
		plans: map[string]*keygate.Plan{"gold": {Name: "gold", RateLimits: []keygate.Window{
			{Name: "burst", Limit: 5, Period: keygate.Duration(time.Second)},
			{Name: "minute", Limit: 100, Period: keygate.Duration(time.Minute)}}}}}
}

// add issues a key with the given settings and returns its plaintext.
func (f *fakeStore) add(t testing.TB, k keygate.Key) string {
	t.Helper()
	kind := keys.TagSecret
	if k.Kind == keygate.KindPublishable {
		kind = keys.TagPublishable
	}
	env := k.Env
	if env == "" {
		env = keygate.EnvLive
	}
	pt, err := keys.Generate("kg", kind, env)
	if err != nil {
		t.Fatal(err)
	}
	h := keys.Hash(pt)
	k.Hash = h[:]
	if k.ID == "" {
		k.ID = keys.NewID("key")
	}
	if k.ConsumerID == "" {
		k.ConsumerID = "con_1"
	}
	if k.State == "" {
		k.State = keygate.StateActive
	}
	f.keys[string(h[:])] = &k
	return pt
}

type fixedClock struct{ t atomic.Pointer[time.Time] }

func (c *fixedClock) now() time.Time  { return *c.t.Load() }
func (c *fixedClock) set(t time.Time) { c.t.Store(&t) }

func TestVerifyOrderAndCodes(t *testing.T) {
	f := newFake()
	clock := &fixedClock{}
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	clock.set(now)
	past, future := now.Add(-time.Minute), now.Add(time.Hour)
	reason := "test"
	active := f.add(t, keygate.Key{Scopes: []string{"products:*", "*:read"}})
	revoked := f.add(t, keygate.Key{State: keygate.StateRevoked, RevokeReason: &reason, ExpiresAt: &past})
	expired := f.add(t, keygate.Key{ExpiresAt: &past, State: keygate.StateDisabled})
	disabled := f.add(t, keygate.Key{State: keygate.StateDisabled, ExpiresAt: &future})
	ipKey := f.add(t, keygate.Key{IPAllow: []string{"203.0.113.0/24", "2001:db8::/32"}, Scopes: []string{"a:b"}})
	refKey := f.add(t, keygate.Key{Kind: keygate.KindPublishable, ReferrerAllow: []string{"https://app.example.com", "https://*.example.org"}})
	bad := active[:len(active)-1] + string(rune(active[len(active)-1])^1)

	v := New(Options{Store: f, Now: clock.now, LegacyPrefixes: []string{"legacy_"}})
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{"valid", Request{Key: active, Scopes: []string{"products:write", "orders:read"}}, keygate.CodeValid},
		{"empty", Request{Key: ""}, keygate.CodeNotFound},
		{"bad checksum", Request{Key: bad}, keygate.CodeNotFound},
		{"unknown legacy", Request{Key: "legacy_abc"}, keygate.CodeNotFound},
		{"foreign string", Request{Key: "sk_live_whatever"}, keygate.CodeNotFound},
		{"revoked before expired", Request{Key: revoked}, keygate.CodeRevoked},
		{"expired before disabled", Request{Key: expired}, keygate.CodeExpired},
		{"disabled", Request{Key: disabled}, keygate.CodeDisabled},
		{"scope missing", Request{Key: active, Scopes: []string{"orders:write"}}, keygate.CodeInsufficientScope},
		{"ip v4 allowed", Request{Key: ipKey, IP: netip.MustParseAddr("203.0.113.9"), Scopes: []string{"a:b"}}, keygate.CodeValid},
		{"ip v4-mapped allowed", Request{Key: ipKey, IP: netip.MustParseAddr("::ffff:203.0.113.9"), Scopes: []string{"a:b"}}, keygate.CodeValid},
		{"ip v6 allowed", Request{Key: ipKey, IP: netip.MustParseAddr("2001:db8::1")}, keygate.CodeValid},
		{"ip outside", Request{Key: ipKey, IP: netip.MustParseAddr("198.51.100.1")}, keygate.CodeIPNotAllowed},
		{"ip missing", Request{Key: ipKey}, keygate.CodeIPNotAllowed},
		{"ip checked before scopes", Request{Key: ipKey, Scopes: []string{"x:y"}}, keygate.CodeIPNotAllowed},
		{"referrer ok", Request{Key: refKey, Referrer: "https://app.example.com/page?x=1"}, keygate.CodeValid},
		{"referrer case", Request{Key: refKey, Referrer: "HTTPS://APP.EXAMPLE.COM"}, keygate.CodeValid},
		{"referrer wildcard", Request{Key: refKey, Referrer: "https://a.b.example.org/"}, keygate.CodeValid},
		{"referrer wildcard not bare", Request{Key: refKey, Referrer: "https://example.org"}, keygate.CodeReferrerNotAllowed},
		{"referrer other", Request{Key: refKey, Referrer: "https://evil.com/app.example.com"}, keygate.CodeReferrerNotAllowed},
		{"referrer scheme", Request{Key: refKey, Referrer: "http://app.example.com"}, keygate.CodeReferrerNotAllowed},
		{"referrer userinfo trick", Request{Key: refKey, Referrer: "https://app.example.com@evil.com"}, keygate.CodeReferrerNotAllowed},
		{"referrer missing", Request{Key: refKey}, keygate.CodeReferrerNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var res Result
			if err := v.Verify(context.Background(), &tt.req, &res); err != nil {
				t.Fatal(err)
			}
			if res.Code != tt.want || res.Valid != (tt.want == keygate.CodeValid) {
				t.Errorf("Verify(%s) = %s valid=%v; want %s", tt.name, res.Code, res.Valid, tt.want)
			}
		})
	}
	// Malformed and foreign strings never reached storage: only the six real keys and the string
	// under a legacy prefix were looked up, once each.
	if n := f.lookups.Load(); n != 7 {
		t.Errorf("storage lookups = %d; want 7 (one per distinct well-formed key, and the legacy-prefixed string)", n)
	}
}

func TestWarmCacheNeverTouchesStorage(t *testing.T) {
	f := newFake()
	pt := f.add(t, keygate.Key{})
	v := New(Options{Store: f})
	var res Result
	for i := 0; i < 100; i++ {
		if err := v.Verify(context.Background(), &Request{Key: pt}, &res); err != nil || !res.Valid {
			t.Fatalf("Verify = %v, %v", res.Code, err)
		}
	}
	if n := f.lookups.Load(); n != 1 {
		t.Fatalf("lookups = %d; want 1", n)
	}
}

func TestInvalidation(t *testing.T) {
	f := newFake()
	pt := f.add(t, keygate.Key{})
	h := keys.Hash(pt)
	v := New(Options{Store: f})
	ctx := context.Background()
	check := func(want string) {
		t.Helper()
		_, code, err := v.Lookup(ctx, pt)
		if err != nil {
			t.Fatal(err)
		}
		if code == "" {
			code = keygate.CodeValid
		}
		if code != want {
			t.Fatalf("Lookup = %s; want %s", code, want)
		}
	}
	check(keygate.CodeValid)
	f.keys[string(h[:])].State = keygate.StateRevoked
	check(keygate.CodeValid) // cached until told
	v.KeyChanged("", h[:])
	check(keygate.CodeRevoked)

	// Negative caching: a key unknown at first lookup stays unknown until invalidated...
	pt2, _ := keys.Generate("kg", "sk", "live")
	check2 := func(want string) {
		t.Helper()
		_, code, _ := v.Lookup(ctx, pt2)
		if code == "" {
			code = keygate.CodeValid
		}
		if code != want {
			t.Fatalf("Lookup(new) = %s; want %s", code, want)
		}
	}
	check2(keygate.CodeNotFound)
	h2 := keys.Hash(pt2)
	f.keys[string(h2[:])] = &keygate.Key{ID: "key_2", ConsumerID: "con_1", State: keygate.StateActive, Hash: h2[:]}
	check2(keygate.CodeNotFound)
	// ...and creation invalidates the negative entry at once.
	v.KeyChanged("key_2", h2[:])
	check2(keygate.CodeValid)

	// Plan changes drop the entries of keys on that plan.
	e, _, _ := v.Lookup(ctx, pt2)
	if len(e.Limits) != 2 {
		t.Fatalf("limits = %d; want 2 from plan gold", len(e.Limits))
	}
	f.plans["gold"] = &keygate.Plan{Name: "gold"}
	v.PlanChanged("gold")
	e, _, _ = v.Lookup(ctx, pt2)
	if len(e.Limits) != 0 {
		t.Fatalf("limits after plan change = %d; want 0", len(e.Limits))
	}
}

func TestNegativeCacheExpires(t *testing.T) {
	f := newFake()
	clock := &fixedClock{}
	clock.set(time.Unix(1_800_000_000, 0))
	v := New(Options{Store: f, Now: clock.now, NegativeTTL: time.Hour}) // clamped to 5s
	pt, _ := keys.Generate("kg", "sk", "test")
	for i := 0; i < 3; i++ {
		v.Lookup(context.Background(), pt)
	}
	if n := f.lookups.Load(); n != 1 {
		t.Fatalf("lookups = %d; want 1", n)
	}
	clock.set(clock.now().Add(5 * time.Second))
	v.Lookup(context.Background(), pt)
	if n := f.lookups.Load(); n != 2 {
		t.Fatalf("lookups after 5s = %d; want 2 (negative entries live at most 5s)", n)
	}
}

func TestStorageFailureIsUnavailable(t *testing.T) {
	f := newFake()
	f.fail = errors.New("connection refused")
	pt, _ := keys.Generate("kg", "sk", "live")
	v := New(Options{Store: f})
	var res Result
	err := v.Verify(context.Background(), &Request{Key: pt}, &res)
	if keygate.ErrorCode(err) != keygate.CodeUnavailable {
		t.Fatalf("Verify with storage down = %v; want UNAVAILABLE", err)
	}
	// The failure is not cached as "unknown".
	f.fail = nil
	if err := v.Verify(context.Background(), &Request{Key: pt}, &res); err != nil || res.Code != keygate.CodeNotFound {
		t.Fatalf("after recovery = %v %v; want NOT_FOUND", res.Code, err)
	}
}

func TestEntryLimits(t *testing.T) {
	q := &keygate.Quota{Limit: 10, Period: keygate.PeriodDay}
	k := &keygate.Key{ID: "key_new", LimiterID: "key_old", ConsumerID: "con_1", Plan: "gold",
		RateLimits: []keygate.Window{{Name: "burst", Limit: 2, Period: keygate.Duration(time.Second)}, {Name: "hour", Limit: 50, Period: keygate.Duration(time.Hour)}}}
	c := &keygate.Consumer{ID: "con_1", RateLimits: []keygate.Window{{Name: "minute", Limit: 30, Period: keygate.Duration(time.Minute)}},
		Quota: &keygate.Quota{Limit: 1000, Period: keygate.PeriodMonth}}
	p := &keygate.Plan{Name: "gold", Quota: q, RateLimits: []keygate.Window{
		{Name: "burst", Limit: 5, Period: keygate.Duration(time.Second)}, {Name: "minute", Limit: 100, Period: keygate.Duration(time.Minute)}}}
	e := NewEntry(k, c, p)
	want := []ratelimit.Limit{
		{Name: "burst", Key: "k:key_old:burst", Kind: ratelimit.Window, Limit: 2, Period: time.Second},
		{Name: "minute", Key: "k:key_old:minute", Kind: ratelimit.Window, Limit: 100, Period: time.Minute},
		{Name: "hour", Key: "k:key_old:hour", Kind: ratelimit.Window, Limit: 50, Period: time.Hour},
		{Name: "quota", Key: "k:key_old:quota", Kind: ratelimit.QuotaDay, Limit: 10},
		{Name: "consumer-minute", Key: "c:con_1:minute", Kind: ratelimit.Window, Limit: 30, Period: time.Minute},
		{Name: "consumer-quota", Key: "c:con_1:quota", Kind: ratelimit.QuotaMonth, Limit: 1000},
	}
	if len(e.Limits) != len(want) {
		t.Fatalf("limits = %+v; want %+v", e.Limits, want)
	}
	for i := range want {
		if e.Limits[i] != want[i] {
			t.Errorf("limit %d = %+v; want %+v", i, e.Limits[i], want[i])
		}
	}
}

func TestThrottledBeforeLimits(t *testing.T) {
	f := newFake()
	f.consumers["con_1"] = &keygate.Consumer{ID: "con_1"}
	pt := f.add(t, keygate.Key{ID: "key_hot", Scopes: []string{"a:b"}, Quota: &keygate.Quota{Limit: 1, Period: keygate.PeriodDay}})
	lim := ratelimit.NewMemory()
	defer lim.Close()
	v := New(Options{Store: f, Limiter: lim, Throttled: func(id string) bool { return id == "key_hot" }})
	var res Result
	ctx := context.Background()
	for _, tt := range []struct {
		req  Request
		want string
	}{
		{Request{Key: pt, Scopes: []string{"x:y"}}, keygate.CodeInsufficientScope}, // scopes first
		{Request{Key: pt, Scopes: []string{"a:b"}}, keygate.CodeThrottled},
		{Request{Key: pt, Scopes: []string{"a:b"}}, keygate.CodeThrottled}, // and nothing consumed
	} {
		v.Verify(ctx, &tt.req, &res)
		if res.Code != tt.want {
			t.Fatalf("Verify = %s; want %s", res.Code, tt.want)
		}
	}
	v2 := New(Options{Store: f, Limiter: lim})
	if v2.Verify(ctx, &Request{Key: pt, Scopes: []string{"a:b"}, Cost: 1}, &res); res.Code != keygate.CodeValid {
		t.Fatalf("after throttling, the quota was consumed: %s", res.Code)
	}
}

func TestLimitCodes(t *testing.T) {
	f := newFake()
	f.consumers["con_1"] = &keygate.Consumer{ID: "con_1"}
	q := &keygate.Quota{Limit: 3, Period: keygate.PeriodDay}
	pt := f.add(t, keygate.Key{Quota: q})
	pt2 := f.add(t, keygate.Key{RateLimits: []keygate.Window{{Name: "burst", Limit: 2, Period: keygate.Duration(time.Hour)}}})
	lim := ratelimit.NewMemory()
	defer lim.Close()
	var counted int64
	v := New(Options{Store: f, Limiter: lim, OnAllowed: func(_ *Entry, n int64) { counted += n }})
	ctx := context.Background()
	var res Result
	codes := func(key string, n int, cost int64) []string {
		var out []string
		for i := 0; i < n; i++ {
			if err := v.Verify(ctx, &Request{Key: key, Cost: cost}, &res); err != nil {
				t.Fatal(err)
			}
			out = append(out, res.Code)
		}
		return out
	}
	if got := codes(pt, 1, 0); got[0] != keygate.CodeValid || counted != 0 {
		t.Fatalf("cost 0 = %v counted %d; want VALID, nothing counted", got, counted)
	}
	got := codes(pt, 4, 1)
	if got[2] != keygate.CodeValid || got[3] != keygate.CodeQuotaExceeded {
		t.Fatalf("quota codes = %v", got)
	}
	if res.Limits.States[0].Remaining != 0 || counted != 3 {
		t.Fatalf("remaining = %d counted = %d", res.Limits.States[0].Remaining, counted)
	}
	got = codes(pt2, 3, 1)
	if got[1] != keygate.CodeValid || got[2] != keygate.CodeRateLimited {
		t.Fatalf("window codes = %v", got)
	}
}

// BenchmarkVerifyWarm measures the hot path with a warm cache: a key with scopes and an IP
// allow-list, no limiter (the limiter has its own benchmarks).
func BenchmarkVerifyWarm(b *testing.B) {
	f := newFake()
	f.consumers["con_1"] = &keygate.Consumer{ID: "con_1"}
	pt := f.add(b, keygate.Key{Scopes: []string{"products:read", "orders:*"}, IPAllow: []string{"10.0.0.0/8"}})
	v := New(Options{Store: f})
	req := &Request{Key: pt, Scopes: []string{"orders:write"}, IP: netip.MustParseAddr("10.1.2.3"), Cost: 1}
	var res Result
	ctx := context.Background()
	if err := v.Verify(ctx, req, &res); err != nil || !res.Valid {
		b.Fatal(res.Code, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v.Verify(ctx, req, &res)
	}
}

// BenchmarkVerifyWarmParallel is the same on every core.
func BenchmarkVerifyWarmParallel(b *testing.B) {
	f := newFake()
	f.consumers["con_1"] = &keygate.Consumer{ID: "con_1"}
	var pts []string
	for i := 0; i < 1000; i++ {
		pts = append(pts, f.add(b, keygate.Key{Scopes: []string{"products:read"}}))
	}
	v := New(Options{Store: f})
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var res Result
		req := &Request{Scopes: []string{"products:read"}, Cost: 1}
		i := 0
		for pb.Next() {
			req.Key = pts[i%len(pts)]
			i++
			v.Verify(context.Background(), req, &res)
		}
	})
}
