package store

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/stretchr/testify/assert"

	"github.com/logbookhq/logbook/pkg/chdb"
)

func TestClassify(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("failed to insert 10 events (token t): %w", err) }
	embedded := func(msg string) error { return wrap(&chdb.Error{Message: msg}) }
	server := func(code int32, msg string) error { return wrap(&clickhouse.Exception{Code: code, Message: msg}) }
	tests := []struct {
		name string
		err  error
		want Refusal
	}{
		{"embedded: too many partitions", embedded("Code: 252. DB::Exception: Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100). The limit is controlled by 'max_partitions_per_insert_block' setting. (TOO_MANY_PARTS)"), RefusedTooLarge},
		{"server: too many partitions", server(252, "Too many partitions for single INSERT block (more than 100). The limit is controlled by 'max_partitions_per_insert_block' setting."), RefusedTooLarge},
		{"embedded: too many parts (merges behind): retry", embedded("Code: 252. DB::Exception: Too many parts (3001 with average size of 1.00 KiB) in table 'default.events'. Merges are processing significantly slower than inserts. (TOO_MANY_PARTS)"), Unavailable},
		{"server: too many parts (merges behind): retry", server(252, "Too many parts (3001). Merges are processing significantly slower than inserts"), Unavailable},
		{"embedded: memory limit", embedded("Code: 241. DB::Exception: Memory limit (total) exceeded: would use 9.31 GiB. (MEMORY_LIMIT_EXCEEDED)"), RefusedTooLarge},
		{"server: memory limit", server(241, "Memory limit (for query) exceeded"), RefusedTooLarge},
		{"embedded: parse error", embedded("Code: 41. DB::Exception: Cannot parse datetime: (CANNOT_PARSE_DATETIME)"), RefusedData},
		{"server: type mismatch", server(53, "Type mismatch"), RefusedData},
		{"server: table read only", server(242, "Table is in readonly mode"), Unavailable},
		{"embedded: no code", embedded("something odd"), Unavailable},
		{"network", wrap(errors.New("dial tcp 127.0.0.1:9000: connection refused")), Unavailable},
		{"deadline", wrap(context.DeadlineExceeded), Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, Classify(tt.err))
			assert.Equal(t, tt.want == RefusedData, IsDataError(tt.err))
		})
	}
}
