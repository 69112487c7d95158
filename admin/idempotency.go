package admin

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/keygate/keygate"
)

// IdempotencyWindow is how long a POST's first answer is replayed for a repeat (SPEC §3: 24 h).
const IdempotencyWindow = 24 * time.Hour

const maxIdempotencyKey = 255

// maxStoredAnswer bounds the answers kept for replay; larger ones are not remembered.
const maxStoredAnswer = 256 << 10

// idempotency tracks requests in flight on this node, so that a repeat arriving while the first
// is still running is refused instead of being applied twice.
type idempotency struct {
	now       func() time.Time
	mu        sync.Mutex
	inflight  map[string]bool
	lastPurge time.Time
}

// purgeEvery is how often records older than IdempotencyWindow are deleted, piggybacking on the
// requests that store records (no goroutine to own).
const purgeEvery = time.Hour

// purgeDue reports whether this node should purge old records now, and notes that it does.
func (i *idempotency) purgeDue(now time.Time) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	if now.Sub(i.lastPurge) < purgeEvery {
		return false
	}
	i.lastPurge = now
	return true
}

func newIdempotency(now func() time.Time) *idempotency {
	return &idempotency{now: now, inflight: make(map[string]bool)}
}

func (i *idempotency) begin(k string) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.inflight[k] {
		return false
	}
	i.inflight[k] = true
	return true
}

func (i *idempotency) end(k string) {
	i.mu.Lock()
	delete(i.inflight, k)
	i.mu.Unlock()
}

// idempotent replays the first answer to a POST with the same Idempotency-Key, caller, method,
// path and body within IdempotencyWindow. Only 2xx and 4xx answers are remembered, and never a
// plaintext: the "key" and "secret" members are removed before storing and replays carry
// "idempotent_replay": true instead (and the header Idempotent-Replayed: true).
func (s *server) idempotent(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vals := r.Header.Values("Idempotency-Key")
		if len(vals) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		key := vals[0]
		if len(vals) > 1 || !validIdempotencyKey(key) {
			writeProblem(w, r, keygate.CodeBadRequest, "Idempotency-Key must be one header of 1 to 255 printable ASCII characters")
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				writeProblem(w, r, keygate.CodePayloadTooLarge, "request body is larger than "+strconv.FormatInt(mbe.Limit, 10)+" bytes")
				return
			}
			writeProblem(w, r, keygate.CodeBadRequest, "reading the request body failed")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))

		h := sha256.New()
		h.Write([]byte(r.Method + "\n" + r.URL.EscapedPath() + "?" + r.URL.RawQuery + "\n"))
		h.Write(body)
		sum := h.Sum(nil)
		root, _, _ := Caller(r.Context())
		scope := "admin:" + root.ID

		flight := scope + "\x00" + key
		if !s.idem.begin(flight) {
			writeProblem(w, r, keygate.CodeConflict, "a request with this Idempotency-Key is still being processed")
			return
		}
		defer s.idem.end(flight)

		store := s.ctl.Store()
		now := s.now()
		rec, err := store.Idempotency(r.Context(), scope, key, now.Add(-IdempotencyWindow))
		switch {
		case err == nil:
			if !bytes.Equal(rec.RequestHash, sum) {
				writeProblem(w, r, keygate.CodeConflict, "this Idempotency-Key was used for a different request")
				return
			}
			replay(w, rec)
			return
		case keygate.ErrorCode(err) != keygate.CodeNotFound:
			writeError(w, r, err)
			return
		}

		rw := &bufferedWriter{header: w.Header()}
		next.ServeHTTP(rw, r)
		if rw.status == 0 {
			rw.status = http.StatusOK
		}
		if (rw.status/100 == 2 || rw.status/100 == 4) && rw.body.Len() <= maxStoredAnswer {
			stored := &keygate.IdempotencyRecord{Scope: scope, Key: key, RequestHash: sum, Status: rw.status,
				Body: forReplay(rw.body.Bytes(), rw.status), CreatedAt: now}
			err := store.Update(r.Context(), func(tx keygate.Tx) error { return tx.PutIdempotency(r.Context(), stored) })
			if err != nil && keygate.ErrorCode(err) != keygate.CodeConflict {
				loggerFrom(r).WarnContext(r.Context(), "admin: storing an idempotent answer failed", "err", err)
			}
			if s.idem.purgeDue(now) {
				if err := store.PurgeIdempotency(r.Context(), now.Add(-IdempotencyWindow)); err != nil {
					loggerFrom(r).WarnContext(r.Context(), "admin: purging old idempotency records failed", "err", err)
				}
			}
		}
		w.WriteHeader(rw.status)
		w.Write(rw.body.Bytes())
	})
}

func validIdempotencyKey(k string) bool {
	if k == "" || len(k) > maxIdempotencyKey {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

func replay(w http.ResponseWriter, rec *keygate.IdempotencyRecord) {
	ct := "application/json"
	if rec.Status >= 400 {
		ct = "application/problem+json"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Idempotent-Replayed", "true")
	w.WriteHeader(rec.Status)
	w.Write(rec.Body)
}

// forReplay removes plaintexts from a successful JSON object answer and marks it as a replay.
func forReplay(body []byte, status int) []byte {
	if status/100 != 2 {
		return body
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return body
	}
	delete(m, "key")
	delete(m, "secret")
	m["idempotent_replay"] = json.RawMessage("true")
	b, err := json.Marshal(m)
	if err != nil {
		return body
	}
	return append(b, '\n')
}

// bufferedWriter holds an answer until it has been remembered.
type bufferedWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *bufferedWriter) Header() http.Header { return w.header }

func (w *bufferedWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *bufferedWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}
