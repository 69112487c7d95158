package keygate

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"90d", 90 * Day, true},
		{"36h", 36 * time.Hour, true},
		{"500ms", 500 * time.Millisecond, true},
		{"1d12h", 36 * time.Hour, true},
		{"12h1d", 36 * time.Hour, true},
		{"1.5d", 36 * time.Hour, true},
		{"0s", 0, true},
		{"", 0, false},
		{"d", 0, false},
		{"-1h", 0, false},
		{"-1d", 0, false},
		{"10", 0, false},
		{"abd", 0, false},
		{"1w", 0, false},
		{"1dd", 0, false},
		{"9999999d", 0, false},
		{"106752d", 0, false},
		{"100000d", 100000 * Day, true},
		{"99999d2400000h", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	var d Duration
	if err := json.Unmarshal([]byte(`"90d"`), &d); err != nil || d.D() != 90*Day {
		t.Fatalf("unmarshal 90d = %v, %v", d, err)
	}
	if err := json.Unmarshal([]byte(`3600`), &d); err == nil {
		t.Fatal("a number was accepted as a duration")
	}
	b, _ := json.Marshal(Duration(48 * time.Hour))
	if string(b) != `"2d"` {
		t.Fatalf("marshal 48h = %s; want \"2d\"", b)
	}
	b, _ = json.Marshal(Duration(90 * time.Minute))
	if string(b) != `"1h30m0s"` {
		t.Fatalf("marshal 90m = %s", b)
	}
}

func TestScopes(t *testing.T) {
	tests := []struct {
		granted []string
		want    []string
		ok      bool
	}{
		{[]string{"products:read"}, []string{"products:read"}, true},
		{[]string{"products:*"}, []string{"products:write"}, true},
		{[]string{"*:read"}, []string{"orders:read", "products:read"}, true},
		{[]string{"*:*"}, []string{"a:b"}, true},
		{[]string{"products:read"}, []string{"products:write"}, false},
		{[]string{"products:read"}, []string{"products:read", "orders:read"}, false},
		{nil, nil, true},
		{nil, []string{"a:b"}, false},
		{[]string{"products:read"}, []string{"products"}, false},
		{[]string{"products:read"}, []string{"products:*"}, false},
	}
	for _, tt := range tests {
		if got := ScopesGrant(tt.granted, tt.want); got != tt.ok {
			t.Errorf("ScopesGrant(%v, %v) = %v; want %v", tt.granted, tt.want, got, tt.ok)
		}
	}
	valid := map[string]bool{"a:b": true, "products_v2:read-all": true, "*:read": true, "a:*": true,
		"A:b": false, "a:b:c": false, "a": false, ":b": false, "a:": false, "a b:c": false, "é:b": false}
	for s, want := range valid {
		if got := ValidScope(s, true); got != want {
			t.Errorf("ValidScope(%q) = %v; want %v", s, got, want)
		}
	}
	if ValidScope("*:read", false) {
		t.Error("wildcard accepted where not allowed")
	}
}

func TestEffectiveSettings(t *testing.T) {
	w := func(name string, limit int64, p time.Duration) Window {
		return Window{Name: name, Limit: limit, Period: Duration(p)}
	}
	gold := &Plan{Name: "gold", RateLimits: []Window{w("burst", 5, time.Second), w("minute", 100, time.Minute)},
		Quota: &Quota{Limit: 5000, Period: PeriodMonth}, MaxAge: (*Duration)(ptr(90 * Day))}
	con := &Consumer{ID: "c", Plan: "gold", RateLimits: []Window{w("minute", 1000, time.Minute)}, Quota: &Quota{Limit: 9, Period: PeriodDay}}
	tests := []struct {
		name       string
		key        Key
		consumer   *Consumer
		plan       *Plan
		wantPlan   string
		wantWins   []Window
		wantQuota  int64
		wantMaxAge time.Duration
	}{
		{"plan from consumer", Key{}, con, gold, "gold", gold.RateLimits, 5000, 90 * Day},
		{"key windows replace by name and add", Key{RateLimits: []Window{w("minute", 10, time.Minute), w("hour", 50, time.Hour)}}, con, gold, "gold",
			[]Window{w("burst", 5, time.Second), w("minute", 10, time.Minute), w("hour", 50, time.Hour)}, 5000, 90 * Day},
		{"key quota wins", Key{Quota: &Quota{Limit: 7, Period: PeriodDay}}, con, gold, "gold", gold.RateLimits, 7, 90 * Day},
		{"key max_age wins", Key{MaxAge: (*Duration)(ptr(time.Hour))}, con, gold, "gold", gold.RateLimits, 5000, time.Hour},
		{"no plan", Key{}, &Consumer{ID: "c"}, nil, "", nil, 0, 0},
		{"key plan over consumer plan", Key{Plan: "silver"}, con, &Plan{Name: "silver"}, "silver", nil, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := EffectiveSettings(&tt.key, tt.consumer, tt.plan)
			if e.Plan != tt.wantPlan {
				t.Errorf("plan = %q; want %q", e.Plan, tt.wantPlan)
			}
			if len(e.RateLimits) != len(tt.wantWins) {
				t.Fatalf("windows = %+v; want %+v", e.RateLimits, tt.wantWins)
			}
			for i := range tt.wantWins {
				if e.RateLimits[i] != tt.wantWins[i] {
					t.Errorf("window %d = %+v; want %+v", i, e.RateLimits[i], tt.wantWins[i])
				}
			}
			var q int64
			if e.Quota != nil {
				q = e.Quota.Limit
			}
			if q != tt.wantQuota || e.MaxAge != tt.wantMaxAge {
				t.Errorf("quota = %d, max_age = %v; want %d, %v", q, e.MaxAge, tt.wantQuota, tt.wantMaxAge)
			}
		})
	}
	// The consumer's own limits apply in addition, whatever the key says.
	e := EffectiveSettings(&Key{}, con, gold)
	if len(e.ConsumerRateLimits) != 1 || e.ConsumerQuota == nil || e.ConsumerQuota.Limit != 9 {
		t.Errorf("consumer limits = %+v %+v", e.ConsumerRateLimits, e.ConsumerQuota)
	}
}

func ptr[T any](v T) *T { return &v }

func TestKeyValidate(t *testing.T) {
	base := func() Key {
		return Key{Kind: KindSecret, Env: EnvLive, Scopes: []string{"products:read"}}
	}
	tests := []struct {
		name   string
		mutate func(*Key)
		field  string // "" = valid
	}{
		{"valid", func(*Key) {}, ""},
		{"bad kind", func(k *Key) { k.Kind = "root" }, "kind"},
		{"bad env", func(k *Key) { k.Env = "prod" }, "env"},
		{"bad scope", func(k *Key) { k.Scopes = []string{"Products:Read"} }, "scopes"},
		{"bad cidr", func(k *Key) { k.IPAllow = []string{"10.0.0.0/33"} }, "ip_allow"},
		{"good v6 cidr", func(k *Key) { k.IPAllow = []string{"2001:db8::/32", "192.0.2.1"} }, ""},
		{"bad referrer", func(k *Key) { k.ReferrerAllow = []string{"javascript:alert(1)"} }, "referrer_allow"},
		{"referrer with path", func(k *Key) { k.ReferrerAllow = []string{"https://a.example/x"} }, "referrer_allow"},
		{"long name", func(k *Key) { k.Name = strings.Repeat("x", MaxNameLen+1) }, "name"},
		{"control char name", func(k *Key) { k.Name = "a\x00b" }, "name"},
		{"invalid utf8 name", func(k *Key) { k.Name = "a\xffb" }, "name"},
		{"invalid utf8 metadata", func(k *Key) { k.Metadata = map[string]any{"a": []any{"ok", "\xff"}} }, "metadata"},
		{"big metadata", func(k *Key) { k.Metadata = map[string]any{"x": strings.Repeat("y", MaxMetadataSize)} }, "metadata"},
		{"window zero limit", func(k *Key) { k.RateLimits = []Window{{Name: "w", Limit: 0, Period: Duration(time.Second)}} }, "rate_limits"},
		{"window dup", func(k *Key) {
			k.RateLimits = []Window{{Name: "w", Limit: 1, Period: Duration(time.Second)}, {Name: "w", Limit: 2, Period: Duration(time.Second)}}
		}, "rate_limits"},
		{"window reserved name", func(k *Key) { k.RateLimits = []Window{{Name: "quota", Limit: 1, Period: Duration(time.Second)}} }, "rate_limits"},
		{"quota period", func(k *Key) { k.Quota = &Quota{Limit: 1, Period: "week"} }, "quota"},
		{"publishable write scope", func(k *Key) {
			k.Kind = KindPublishable
			k.ReferrerAllow = []string{"https://app.example.com"}
			k.Scopes = []string{"products:write"}
		}, "publishable"},
		{"publishable without referrers", func(k *Key) { k.Kind = KindPublishable }, "referrer_allow"},
		{"publishable ok", func(k *Key) {
			k.Kind = KindPublishable
			k.ReferrerAllow = []string{"https://*.example.com"}
			k.Scopes = []string{"*:read"}
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := base()
			tt.mutate(&k)
			err := k.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v; want nil", err)
				}
				return
			}
			if ErrorCode(err) != CodeBadRequest || !strings.Contains(ErrorMessage(err), tt.field) {
				t.Fatalf("Validate() = %v; want BAD_REQUEST naming %q", err, tt.field)
			}
		})
	}
}

func TestCeiling(t *testing.T) {
	p := &Plan{Name: "free", ScopesAllowed: []string{"products:read", "orders:*"}}
	if err := CheckCeiling([]string{"products:read", "orders:write", "orders:*"}, p); err != nil {
		t.Errorf("within ceiling: %v", err)
	}
	for _, s := range []string{"products:write", "products:*", "*:read"} {
		if err := CheckCeiling([]string{s}, p); ErrorCode(err) != CodeBadRequest {
			t.Errorf("CheckCeiling(%q) = %v; want BAD_REQUEST", s, err)
		}
	}
	if err := CheckCeiling([]string{"x:y"}, &Plan{Name: "open"}); err != nil {
		t.Errorf("no ceiling: %v", err)
	}
}

func TestKeyJSONShape(t *testing.T) {
	b, err := json.Marshal(&Key{ID: "key_1", Hash: []byte("secret-hash"), LimiterID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	for _, f := range []string{"id", "consumer_id", "name", "kind", "env", "start", "scopes", "plan", "rate_limits", "quota",
		"ip_allow", "referrer_allow", "expires_at", "status", "revoked_at", "revoke_reason", "rotated_from", "rotated_to",
		"rotation_due", "last_used_at", "created_at", "metadata"} {
		if _, ok := m[f]; !ok {
			t.Errorf("key JSON lacks %q: %s", f, b)
		}
	}
	if m["plan"] != nil || strings.Contains(string(b), "hash") || strings.Contains(string(b), "limiter") {
		t.Errorf("key JSON = %s; want plan null and no hash or limiter id", b)
	}
	if _, ok := m["scopes"].([]any); !ok {
		t.Errorf("scopes = %v; want []", m["scopes"])
	}
}

func TestPeriodBounds(t *testing.T) {
	at := time.Date(2028, 2, 29, 23, 59, 59, 0, time.FixedZone("x", 3600))
	s, e := PeriodBounds(PeriodMonth, at)
	if !s.Equal(time.Date(2028, 2, 1, 0, 0, 0, 0, time.UTC)) || !e.Equal(time.Date(2028, 3, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("month bounds = %v %v", s, e)
	}
	s, e = PeriodBounds(PeriodDay, at)
	if !s.Equal(time.Date(2028, 2, 29, 0, 0, 0, 0, time.UTC)) || e.Sub(s) != Day {
		t.Errorf("day bounds = %v %v", s, e)
	}
}

func TestOpt(t *testing.T) {
	var p struct {
		A Opt[string]   `json:"a"`
		B Opt[*int]     `json:"b"`
		C Opt[[]string] `json:"c"`
	}
	if err := json.Unmarshal([]byte(`{"a":"x","b":null}`), &p); err != nil {
		t.Fatal(err)
	}
	if !p.A.Set || p.A.Value != "x" || !p.B.Set || !p.B.Null || p.C.Set {
		t.Fatalf("Opt decode = %+v", p)
	}
}
