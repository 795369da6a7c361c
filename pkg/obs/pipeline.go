package obs

import "github.com/prometheus/client_golang/prometheus"

// Validator counts the validator's decisions: validator_events_total{result="valid|rejected|retry"}.
// It is what worker.Worker.UseMetrics takes. Safe for concurrent use.
type Validator struct {
	valid, rejected, retry prometheus.Counter
}

// NewValidator registers the validator's counters on reg.
func NewValidator(reg prometheus.Registerer) *Validator {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "validator_events_total",
		Help: "Raw events the validator settled: valid (republished to the valid stream), rejected (to the rejected stream), retry (left for redelivery).",
	}, []string{"result"})
	reg.MustRegister(v)
	return &Validator{valid: v.WithLabelValues("valid"), rejected: v.WithLabelValues("rejected"), retry: v.WithLabelValues("retry")}
}

// Settled records one batch's outcome.
func (v *Validator) Settled(valid, rejected, retry int) {
	v.valid.Add(float64(valid))
	v.rejected.Add(float64(rejected))
	v.retry.Add(float64(retry))
}
