package obs

import (
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// httpMetrics are one service's request counter and latency histogram.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer, svc string) httpMetrics {
	m := httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: svc + "_http_requests_total",
			Help: "HTTP requests answered, by route template, method and status class (2xx, 4xx, 5xx).",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    svc + "_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route template and method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

// HTTP returns echo middleware that counts and times every request as svc's:
// <svc>_http_requests_total{route,method,code} and <svc>_http_request_duration_seconds{route,method}.
// Place it after wire.NewServer's middleware, so errors are counted with the status the client gets.
func HTTP(reg prometheus.Registerer, svc string) echo.MiddlewareFunc {
	return HTTPBy(reg, func(echo.Context) string { return svc }, svc)
}

// HTTPBy is HTTP for a listener that serves several services' routes (the single process): serviceOf
// names the service of each request, one of services.
func HTTPBy(reg prometheus.Registerer, serviceOf func(c echo.Context) string, services ...string) echo.MiddlewareFunc {
	bySvc := make(map[string]httpMetrics, len(services))
	for _, s := range services {
		bySvc[s] = newHTTPMetrics(reg, s)
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			switch c.Path() {
			case "/metrics", "/healthz", "/readyz":
				return next(c) // probes and scrapes are not traffic
			}
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err) // render it now, to count the status the client gets
			}
			m, ok := bySvc[serviceOf(c)]
			if !ok {
				return nil
			}
			route, method := c.Path(), c.Request().Method
			m.requests.WithLabelValues(route, method, statusClass(c.Response().Status)).Inc()
			m.duration.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
			return nil
		}
	}
}

func statusClass(code int) string {
	if code < 100 || code > 599 {
		return "other"
	}
	return strconv.Itoa(code/100) + "xx"
}
