package gateway

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus series.
type metrics struct {
	requests *prometheus.CounterVec   // route, status, code
	latency  *prometheus.HistogramVec // route
	cache    *prometheus.CounterVec   // route, result
}

type routeMetrics struct {
	m         *metrics
	name      string
	latency   prometheus.Observer
	cacheHit  prometheus.Counter
	cacheMiss prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keygate_gateway_requests_total",
			Help: "Requests answered by the proxy, by route, status and error code (\"\" when the upstream answered).",
		}, []string{"route", "status", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keygate_gateway_request_duration_seconds",
			Help:    "Time from a request's arrival until its answer was written, by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keygate_gateway_cache_requests_total",
			Help: "Cacheable requests by route and result (hit, miss); the hit ratio is hit / (hit + miss).",
		}, []string{"route", "result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.latency, m.cache} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) forRoute(name string) routeMetrics {
	return routeMetrics{
		m: m, name: name,
		latency:   m.latency.WithLabelValues(name),
		cacheHit:  m.cache.WithLabelValues(name, "hit"),
		cacheMiss: m.cache.WithLabelValues(name, "miss"),
	}
}

func (r *routeMetrics) observe(status int, code string, d time.Duration) {
	r.m.requests.WithLabelValues(r.name, statusText(status), code).Inc()
	r.latency.Observe(d.Seconds())
}

func (m *metrics) observeNoRoute(status int, code string, d time.Duration) {
	m.requests.WithLabelValues("", statusText(status), code).Inc()
	m.latency.WithLabelValues("").Observe(d.Seconds())
}

var statusTexts = func() (t [600]string) {
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func statusText(s int) string {
	if s >= 0 && s < len(statusTexts) {
		return statusTexts[s]
	}
	return strconv.Itoa(s)
}
