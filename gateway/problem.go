package gateway

import (
	"net/http"
	"strconv"
	"unicode/utf8"
)

var (
	problemContentType = []string{"application/problem+json"}
	noStore            = []string{"no-store"}
	nosniff            = []string{"nosniff"}
)

// quotaExceededType is the problem type of draft-ietf-httpapi-ratelimit-headers-11 for a client
// that exceeded a quota policy: every 429 uses it, with the refusing policy in
// "violated-policies".
const quotaExceededType = "https://iana.org/assignments/http-problem-types#quota-exceeded"

// writeProblem answers with an RFC 9457 problem+json body carrying the SPEC §3 code. The type is
// "urn:keygate:problem:<code>" (as on the admin API), or the draft's quota-exceeded type for a
// 429, whose violated policy (a RateLimit-Policy item name) is given in violated.
func writeProblem(w http.ResponseWriter, status int, code, detail, violated string) {
	h := w.Header()
	h["Content-Type"] = problemContentType
	h["Cache-Control"] = noStore
	h["X-Content-Type-Options"] = nosniff
	delete(h, "Content-Length")
	b := make([]byte, 0, 128+len(detail))
	if status == http.StatusTooManyRequests {
		b = append(b, `{"type":"`+quotaExceededType+`","title":`...)
	} else {
		b = append(b, `{"type":"urn:keygate:problem:`...)
		for i := 0; i < len(code); i++ {
			c := code[i]
			switch {
			case c == '_':
				c = '-'
			case c >= 'A' && c <= 'Z':
				c += 'a' - 'A'
			}
			b = append(b, c)
		}
		b = append(b, `","title":`...)
	}
	b = appendJSONString(b, http.StatusText(status))
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"detail":`...)
	b = appendJSONString(b, detail)
	b = append(b, `,"code":`...)
	b = appendJSONString(b, code)
	if violated != "" {
		b = append(b, `,"violated-policies":[`...)
		b = appendJSONString(b, violated)
		b = append(b, ']')
	}
	b = append(b, "}\n"...)
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	w.Write(b)
}

// appendJSONString appends s as a JSON string: control characters and <>& escaped, valid UTF-8
// kept, invalid bytes replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hexd = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f || c == '<' || c == '>' || c == '&':
			b = append(b, '\\', 'u', '0', '0', hexd[c>>4], hexd[c&0xf])
		default:
			b = append(b, c)
		}
		i++
	}
	return append(b, '"')
}
