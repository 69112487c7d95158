package cli

import (
	"testing"
	"time"

	"github.com/keygate/keygate"
)

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Minute: "1m", time.Hour: "1h", 90 * time.Minute: "1h30m", time.Second: "1s", 500 * time.Millisecond: "500ms",
		48 * time.Hour: "2d", time.Hour + time.Second: "1h0m1s",
	} {
		if got := shortDuration(keygate.Duration(d)); got != want {
			t.Errorf("shortDuration(%v) = %q; want %q", d, got, want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	w, err := parseWindow("burst=5/1s")
	if err != nil || w.Name != "burst" || w.Limit != 5 || w.Period.D() != time.Second {
		t.Fatalf("parseWindow = %+v, %v", w, err)
	}
	for _, bad := range []string{"burst", "burst=5", "burst=x/1s", "burst=5/soon"} {
		if _, err := parseWindow(bad); err == nil {
			t.Errorf("parseWindow(%q) = nil error", bad)
		}
	}
	if q, err := parseQuota("5000/month"); err != nil || q.Limit != 5000 || q.Period != "month" {
		t.Fatalf("parseQuota = %+v, %v", q, err)
	}
	if q, err := parseQuota("none"); err != nil || q != nil {
		t.Fatalf("parseQuota(none) = %+v, %v", q, err)
	}
	if _, err := parseQuota("lots"); err == nil {
		t.Error("parseQuota(lots) = nil error")
	}
	if _, err := parseMetadata("[1]"); err == nil {
		t.Error("parseMetadata([1]) = nil error")
	}
	if _, err := parseTimePtr("expires-at", "tomorrow"); err == nil {
		t.Error("parseTimePtr(tomorrow) = nil error")
	}
}
