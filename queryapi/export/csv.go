package export

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/queryapi/search"
)

// Columns is the header row of every export, in order (documented in docs/api.md).
var Columns = []string{
	"id", "organization_id", "action", "version", "occurred_at", "created_at",
	"actor_id", "actor_type", "actor_name", "actor_metadata",
	"targets", "location", "user_agent", "metadata",
}

// Neutralize makes a cell safe to open in a spreadsheet: a cell that starts with a character a
// spreadsheet would read as the start of a formula (= + - @, tab, carriage return, line feed) gets
// a leading apostrophe. Quoting and embedded separators are encoding/csv's job (RFC 4180).
func Neutralize(cell string) string {
	if cell == "" {
		return cell
	}
	switch cell[0] {
	case '=', '+', '-', '@', '\t', '\r', '\n':
		return "'" + cell
	}
	return cell
}

// rowWriter writes an export's events one by one.
type rowWriter interface {
	write(e *store.Event) error
	flush() error
	count() int64
}

func newWriter(format string, w io.Writer) (rowWriter, error) {
	if format == FormatNDJSON {
		return &ndjsonWriter{w: bufio.NewWriterSize(w, 64<<10)}, nil
	}
	return newCSVWriter(w)
}

// ndjsonWriter writes each event as the API's audit_log_event object, one per line.
type ndjsonWriter struct {
	w    *bufio.Writer
	rows int64
}

func (n *ndjsonWriter) write(e *store.Event) error {
	n.rows++
	if _, err := n.w.Write(search.EventJSON(*e)); err != nil {
		return err
	}
	return n.w.WriteByte('\n')
}

func (n *ndjsonWriter) flush() error { return n.w.Flush() }
func (n *ndjsonWriter) count() int64 { return n.rows }

// csvWriter writes events as CSV rows, neutralising every cell.
type csvWriter struct {
	w    *csv.Writer
	row  []string
	rows int64
}

func newCSVWriter(w io.Writer) (*csvWriter, error) {
	c := &csvWriter{w: csv.NewWriter(w), row: make([]string, len(Columns))}
	if err := c.w.Write(Columns); err != nil {
		return nil, fmt.Errorf("failed to write csv header: %w", err)
	}
	return c, nil
}

// write adds e as a row. Every cell comes straight from a stored column: nothing is parsed.
func (c *csvWriter) write(e *store.Event) error {
	targets := e.Targets
	if targets == "" {
		targets = "[]"
	}
	version := ""
	if e.Version > 0 {
		version = strconv.Itoa(e.Version)
	}
	cells := [...]string{
		e.ID, e.OrganizationID, e.Action, version, event.FormatTime(e.OccurredAt), event.FormatTime(e.ReceivedAt),
		e.ActorID, e.ActorType, e.ActorName, e.ActorMetadata,
		targets, e.Location, e.UserAgent, e.Metadata,
	}
	for i, v := range cells {
		c.row[i] = Neutralize(v)
	}
	c.rows++
	return c.w.Write(c.row)
}

func (c *csvWriter) count() int64 { return c.rows }

func (c *csvWriter) flush() error {
	c.w.Flush()
	return c.w.Error()
}
