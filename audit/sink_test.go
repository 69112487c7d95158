package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate"
)

func entry(seq int64) *keygate.AuditEntry {
	return &keygate.AuditEntry{
		Seq: seq, TS: time.Date(2026, 11, 29, 12, 0, 0, 1000, time.UTC), Actor: "root:rk_1",
		Action: "key.revoke", TargetType: "key", TargetID: "key_<&>", Result: keygate.ResultSuccess,
		Details: map[string]any{"reason": "leaked"}, Hash: "abc123",
	}
}

func TestWriterSinkConcurrent(t *testing.T) {
	var buf bytes.Buffer
	s := NewWriterSink(&buf)
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := s.Write(entry(int64(i + 1))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		var e keygate.AuditEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if e.Hash != "abc123" || e.TargetID != "key_<&>" {
			t.Errorf("line %q lost the hash or target", sc.Text())
		}
		seen[e.Seq] = true
	}
	if len(seen) != n {
		t.Errorf("read %d distinct entries; want %d", len(seen), n)
	}
	if err := s.Write(entry(1)); !errors.Is(err, errClosed) {
		t.Errorf("Write after Close = %v; want %v", err, errClosed)
	}
}

func TestWriterSinkLine(t *testing.T) {
	var buf bytes.Buffer
	s := NewWriterSink(&buf)
	if err := s.Write(entry(3)); err != nil {
		t.Fatal(err)
	}
	want := `{"seq":3,"ts":"2026-11-29T12:00:00.000001Z","actor":"root:rk_1","action":"key.revoke",` +
		`"target_type":"key","target_id":"key_<&>","ip":"","result":"success","details":{"reason":"leaked"},"hash":"abc123"}` + "\n"
	if buf.String() != want {
		t.Errorf("line = %s; want %s", buf.String(), want)
	}
}

func TestFileSink(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	for i := range 2 { // the second open appends
		s, err := OpenFileSink(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Write(entry(int64(i + 1))); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("sink file mode = %04o; want 0600", perm)
	}
	data, _ := os.ReadFile(path)
	if lines := strings.Count(string(data), "\n"); lines != 2 {
		t.Errorf("sink file has %d lines; want 2:\n%s", lines, data)
	}
}

func TestParseSinks(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		specs   []string
		want    int
		wantErr string
	}{
		{nil, 0, ""},
		{[]string{"stdout"}, 1, ""},
		{[]string{"stdout", "file:" + filepath.Join(dir, "a.jsonl")}, 2, ""},
		{[]string{"stderr"}, 0, `"stderr"`},
		{[]string{"file:"}, 0, "empty file path"},
		{[]string{"stdout", "file:" + filepath.Join(dir, "missing", "a.jsonl")}, 0, "no such file"},
		{[]string{"syslog://x"}, 0, `want "stdout" or "file:PATH"`},
	}
	for _, tt := range tests {
		sinks, err := ParseSinks(tt.specs)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseSinks(%q) error = %v; want one containing %s", tt.specs, err, tt.wantErr)
			}
			continue
		}
		if err != nil || len(sinks) != tt.want {
			t.Errorf("ParseSinks(%q) = %d sinks, %v; want %d", tt.specs, len(sinks), err, tt.want)
		}
		Tee(sinks).Close()
	}
}

type failingSink struct{ closed bool }

func (f *failingSink) Write(*keygate.AuditEntry) error { return errors.New("disk full") }
func (f *failingSink) Close() error                    { f.closed = true; return nil }

func TestTee(t *testing.T) {
	var a, b bytes.Buffer
	bad := &failingSink{}
	tee := MultiSink(NewWriterSink(&a), bad, NewWriterSink(&b))
	err := tee.Write(entry(1))
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Tee.Write error = %v; want disk full", err)
	}
	if a.Len() == 0 || b.Len() == 0 || a.String() != b.String() {
		t.Errorf("Tee wrote %q and %q; want the same line to both", a.String(), b.String())
	}
	if err := tee.Close(); err != nil || !bad.closed {
		t.Errorf("Tee.Close = %v, closed all = %v", err, bad.closed)
	}
}
