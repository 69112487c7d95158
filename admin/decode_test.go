package admin

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/control"
)

func TestDecodeDetails(t *testing.T) {
	for _, tc := range []struct {
		body, ct string
		want     string // in the detail
	}{
		{`{"ttl":5}`, "", "ttl"},
		{`{"ttl":"soon"}`, "", "ttl"},
		{`{"expires_at":"tomorrow"}`, "", "expires_at"},
		{`{"name":5}`, "", `"name"`},
		{`{"rate_limits":[{"limit":"x"}]}`, "", "rate_limits"},
		{`{"quota":{"limit":1.5}}`, "", "quota.limit"},
		{`{"nope":1}`, "", `"nope"`},
		{`{"name":"a"} x`, "", "nothing after"},
		{`{"name":`, "", "malformed JSON"},
		{`{"name":"a",}`, "", "malformed JSON"},
		{`[]`, "", "JSON object"},
		{"{\"name\":\"\xff\"}", "", "UTF-8"},
		{`{}`, "text/plain", "Content-Type"},
		{`{}`, "application/merge-patch+json", ""},
		{`{"metadata":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, "", "depth"},
	} {
		r := httptest.NewRequest("POST", "/", strings.NewReader(tc.body))
		ct := tc.ct
		if ct == "" {
			ct = "application/json"
		}
		r.Header.Set("Content-Type", ct)
		var in control.KeyCreate
		err := decode(r, &in)
		if tc.want == "" {
			if err != nil {
				t.Errorf("decode(%.40q, %s) = %v; want nil", tc.body, ct, err)
			}
			continue
		}
		if keygate.ErrorCode(err) != keygate.CodeBadRequest || !strings.Contains(keygate.ErrorMessage(err), tc.want) {
			t.Errorf("decode(%.40q, %s) = %v; want BAD_REQUEST naming %q", tc.body, ct, err, tc.want)
		}
	}
}
