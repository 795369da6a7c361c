package gateway_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/labstack/echo/v4"
)

// BenchmarkCreateEvent is the cost of one single-event request, through echo and a real JetStream
// (file storage, sync always), with many requests in flight (group commit shares the disk syncs),
// without and with an Idempotency-Key (every SDK call carries one).
func BenchmarkCreateEvent(b *testing.B) {
	for _, keyed := range []bool{false, true} {
		b.Run(fmt.Sprintf("keyed=%v", keyed), func(b *testing.B) {
			e := newEnv(b)
			bodies := make([]string, 1024)
			for i := range bodies {
				bodies[i] = bodyN(b, i)
			}
			var n atomic.Int64
			b.SetParallelism(16) // 16 × GOMAXPROCS concurrent requests
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					req := httptest.NewRequest(http.MethodPost, "/audit_logs/events", strings.NewReader(bodies[i%1024]))
					req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
					if keyed {
						req.Header.Set("Idempotency-Key", fmt.Sprint("key-", i))
					}
					rec := httptest.NewRecorder()
					e.e.ServeHTTP(rec, req)
					if rec.Code != http.StatusOK {
						b.Errorf("status %d: %s", rec.Code, rec.Body)
						return
					}
				}
			})
		})
	}
}
