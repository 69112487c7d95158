package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/keygate/keygate"
)

// Sink receives a copy of every audit entry after it is committed (SPEC §7 audit.sinks). The log
// in the database is the record; a sink is a copy for a SIEM, so callers log a Write error rather
// than fail the action. Entries reach sinks as they are: keeping secrets out of them is the job
// of whoever builds the entry.
type Sink interface {
	Write(e *keygate.AuditEntry) error
	Close() error
}

// WriterSink writes entries as JSON lines, hash included, one Write call per entry. It is safe
// for concurrent use.
type WriterSink struct {
	mu     sync.Mutex
	w      io.Writer
	closer io.Closer // nil: Close leaves w open
	closed bool
}

var (
	_ Sink = (*WriterSink)(nil)
	_ Sink = Tee(nil)
)

// NewWriterSink returns a sink writing JSON lines to w. Its Close does not close w.
func NewWriterSink(w io.Writer) *WriterSink {
	return &WriterSink{w: w}
}

// OpenFileSink opens path for appending (created with mode 0600 if missing) and returns a sink
// writing JSON lines to it. Its Close closes the file.
func OpenFileSink(path string) (*WriterSink, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit sink: %w", err)
	}
	return &WriterSink{w: f, closer: f}, nil
}

// Write writes e as one JSON line. Characters such as <, > and & are not escaped.
func (s *WriterSink) Write(e *keygate.AuditEntry) error {
	line, err := jsonLine(e)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	if _, err := s.w.Write(line); err != nil {
		return fmt.Errorf("audit sink: %w", err)
	}
	return nil
}

func jsonLine(e *keygate.AuditEntry) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil { // Encode ends the line with '\n'
		return nil, fmt.Errorf("audit sink: entry %d: %w", e.Seq, err)
	}
	return b.Bytes(), nil
}

// Close stops the sink (later Writes fail) and closes the file of OpenFileSink.
func (s *WriterSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.closer != nil {
		return s.closer.Close()
	}
	return nil
}

// Tee is a Sink copying every entry to each of its sinks, in order.
type Tee []Sink

// MultiSink returns a Tee of sinks.
func MultiSink(sinks ...Sink) Tee { return Tee(sinks) }

// Write writes e to every sink, even after one fails, and returns their errors joined.
func (t Tee) Write(e *keygate.AuditEntry) error {
	var errs []error
	for _, s := range t {
		errs = append(errs, s.Write(e))
	}
	return errors.Join(errs...)
}

// Close closes every sink and returns their errors joined.
func (t Tee) Close() error {
	var errs []error
	for _, s := range t {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

// ParseSinks opens the sinks named by the audit.sinks settings: "stdout" for standard output, or
// "file:/path/to/file" for a file opened with OpenFileSink. On an error, the sinks already opened
// are closed; the error names the bad setting.
func ParseSinks(specs []string) ([]Sink, error) {
	sinks := make([]Sink, 0, len(specs))
	for _, spec := range specs {
		s, err := parseSink(spec)
		if err != nil {
			Tee(sinks).Close()
			return nil, err
		}
		sinks = append(sinks, s)
	}
	return sinks, nil
}

func parseSink(spec string) (Sink, error) {
	if spec == "stdout" {
		return NewWriterSink(os.Stdout), nil
	}
	path, ok := strings.CutPrefix(spec, "file:")
	if !ok {
		return nil, fmt.Errorf("audit sink %q: want \"stdout\" or \"file:PATH\"", spec)
	}
	if path == "" {
		return nil, fmt.Errorf("audit sink %q: empty file path", spec)
	}
	s, err := OpenFileSink(path)
	if err != nil {
		return nil, fmt.Errorf("audit sink %q: %w", spec, errors.Unwrap(err))
	}
	return s, nil
}
