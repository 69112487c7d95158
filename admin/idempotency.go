package admin

import (
	"bytes"
	"context"
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

// idempotency remembers when this node last purged old records.
type idempotency struct {
	now       func() time.Time
	mu        sync.Mutex
	lastPurge time.Time
}

// abandonedClaim is how old a claim (a record of a request still being processed) must be
// before a repeat may take it over: longer than any request can run, so a live request is never
// run twice; a claim this old belongs to a node that died mid-request.
const abandonedClaim = time.Minute

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
	return &idempotency{now: now}
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

		// Claim the key before running the request: the claim is a record with status 0 in the
		// shared database, so a repeat on any node sees it (and is refused while it runs), and
		// only one of two concurrent requests can hold it.
		store := s.ctl.Store()
		now := s.now()
		claim := &keygate.IdempotencyRecord{Scope: scope, Key: key, RequestHash: sum, CreatedAt: now}
		for attempt := 0; ; attempt++ {
			err := store.Update(r.Context(), func(tx keygate.Tx) error { return tx.PutIdempotency(r.Context(), claim) })
			if err == nil {
				break
			}
			if keygate.ErrorCode(err) != keygate.CodeConflict || attempt > 0 {
				writeError(w, r, err)
				return
			}
			rec, err := store.Idempotency(r.Context(), scope, key, now.Add(-IdempotencyWindow))
			if keygate.ErrorCode(err) == keygate.CodeNotFound {
				continue // purged or released meanwhile: claim again
			} else if err != nil {
				writeError(w, r, err)
				return
			}
			switch {
			case !bytes.Equal(rec.RequestHash, sum):
				writeProblem(w, r, keygate.CodeConflict, "this Idempotency-Key was used for a different request")
				return
			case rec.Status != 0:
				replay(w, rec)
				return
			case now.Sub(rec.CreatedAt) < abandonedClaim:
				writeProblem(w, r, keygate.CodeConflict, "a request with this Idempotency-Key is still being processed")
				return
			}
			// An abandoned claim: take it over.
			if err := store.Update(r.Context(), func(tx keygate.Tx) error {
				return tx.DeleteIdempotency(r.Context(), scope, key)
			}); err != nil {
				writeError(w, r, err)
				return
			}
		}

		rw := &bufferedWriter{header: w.Header()}
		next.ServeHTTP(rw, r)
		if rw.status == 0 {
			rw.status = http.StatusOK
		}
		// Complete the claim with the answer, or release it when the answer is not to be replayed
		// (a 5xx: the request may be retried).
		keep := (rw.status/100 == 2 || rw.status/100 == 4) && rw.body.Len() <= maxStoredAnswer
		final := &keygate.IdempotencyRecord{Scope: scope, Key: key, RequestHash: sum, Status: rw.status,
			Body: forReplay(rw.body.Bytes(), rw.status), CreatedAt: now}
		// The request's context may be done (client gone); the record must still be written.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
		err = store.Update(ctx, func(tx keygate.Tx) error {
			if err := tx.DeleteIdempotency(ctx, scope, key); err != nil || !keep {
				return err
			}
			return tx.PutIdempotency(ctx, final)
		})
		cancel()
		if err != nil {
			loggerFrom(r).WarnContext(r.Context(), "admin: completing an idempotency record failed", "err", err)
		}
		if s.idem.purgeDue(now) {
			if err := store.PurgeIdempotency(r.Context(), now.Add(-IdempotencyWindow)); err != nil {
				loggerFrom(r).WarnContext(r.Context(), "admin: purging old idempotency records failed", "err", err)
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
