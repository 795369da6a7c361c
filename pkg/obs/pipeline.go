package obs

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Validator is the validator's metrics; it is what worker.Worker.UseMetrics takes (one worker per
// Validator). Safe for concurrent use.
//
//	validator_events_total{result="valid|rejected|retry"}  messages settled, and failed attempts retried
//	validator_output_errors_total{output}                   failed attempts by output: valid, rejected
//	                                                        (stream publishes), schemas, attempts
//	                                                        (isolation markers), lookup (earlier copies)
//	validator_output_last_error_timestamp_seconds           when an output last failed
//	validator_retrying_messages                             raw messages held back by failing outputs
//	validator_retry_oldest_seconds                          how long the oldest of them has waited
type Validator struct {
	valid, rejected, retry prometheus.Counter
	outputErrors           *prometheus.CounterVec
	lastError              prometheus.Gauge
	mu                     sync.Mutex
	retrying               int
	oldest                 time.Time
}

// NewValidator registers the validator's metrics on reg.
func NewValidator(reg prometheus.Registerer) *Validator {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "validator_events_total",
		Help: "Raw events the validator settled: valid (republished to the valid stream), rejected (to the rejected stream); retry counts failed attempts that are being retried.",
	}, []string{"result"})
	m := &Validator{
		valid: v.WithLabelValues("valid"), rejected: v.WithLabelValues("rejected"), retry: v.WithLabelValues("retry"),
		outputErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "validator_output_errors_total",
			Help: "Failed attempts of the validator on an output (valid, rejected: stream publishes; schemas: lookups; attempts: isolation markers; lookup: earlier copies). Each is retried; none rejects an event.",
		}, []string{"output"}),
		lastError: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "validator_output_last_error_timestamp_seconds",
			Help: "When an output of the validator last failed (Unix time; 0: never).",
		}),
	}
	reg.MustRegister(v, m.outputErrors, m.lastError,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "validator_retrying_messages",
			Help: "Raw messages the validator holds (in progress) because an output fails; they are retried until it recovers.",
		}, func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			return float64(m.retrying)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "validator_retry_oldest_seconds",
			Help: "How long the oldest raw message held back by a failing output has waited (0: none waits).",
		}, func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.oldest.IsZero() {
				return 0
			}
			return time.Since(m.oldest).Seconds()
		}))
	return m
}

// Settled records messages settled as valid or rejected, and failed attempts being retried.
func (v *Validator) Settled(valid, rejected, retry int) {
	v.valid.Add(float64(valid))
	v.rejected.Add(float64(rejected))
	v.retry.Add(float64(retry))
}

// OutputFailed records one failed attempt on output.
func (v *Validator) OutputFailed(output string) {
	v.outputErrors.WithLabelValues(output).Inc()
	v.lastError.SetToCurrentTime()
}

// Waiting records the validator's backlog: messages held back by failing outputs, and since when
// the oldest waits (zero when none).
func (v *Validator) Waiting(retrying int, oldest time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.retrying, v.oldest = retrying, oldest
}
