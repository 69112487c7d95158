// Package benchkit holds what the load benchmarks under bench/ share: serving a handler until
// the context ends, and the statistics of their reports.
package benchkit

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"
)

// Serve serves h on addr until ctx ends, then shuts the server down (5 s for requests in flight).
func Serve(ctx context.Context, addr string, h http.Handler) error {
	srv := &http.Server{Addr: addr, Handler: h, MaxHeaderBytes: 64 << 10, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Median is the median of v (0 for none); v is not changed.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// MinMax is the smallest and the largest of v, which must not be empty.
func MinMax(v []float64) (lo, hi float64) {
	return slices.Min(v), slices.Max(v)
}
