package store

import (
	"encoding/json"
	"fmt"
	"time"
)

// Tables beyond the queue's, the tokens' and the fleet's (the spend ledger,
// budgets, the emergency stop, approvals, alerts, maintenance) travel in a
// dump as rows: each table is described once here, by column, and both
// drivers read and write it from this description. A new table joins the
// dump by gaining an entry in DumpTables; the conformance suite's dump
// round trip then covers it on both drivers.

// DumpColumnKind is how a column's values are carried.
type DumpColumnKind int

// The kinds of column value, and the Go type a DumpRow holds for each.
const (
	DumpText DumpColumnKind = iota // string
	DumpInt                        // int64
	DumpBool                       // bool
	DumpTime                       // time.Time; the zero time is NULL (or 0 where the column is NOT NULL)
	DumpJSON                       // string holding JSON text (jsonb in PostgreSQL)
)

// DumpColumn is one column of a dumped table.
type DumpColumn struct {
	Name string
	Kind DumpColumnKind
	// Added marks a column added after dumps of its table were first
	// written: a row from an older dump, without it, takes the kind's
	// zero value.
	Added bool
}

// DumpTable describes a table that travels as rows.
type DumpTable struct {
	Name    string
	Columns []DumpColumn
	// Key is how many leading columns form the primary key: rows are
	// dumped in key order, and a stored key is never overwritten by a
	// merge.
	Key int
	// Singleton tables hold the one row their migration creates (the
	// emergency stop's switch): a load into an empty store replaces it,
	// a merge keeps the store's.
	Singleton bool
	// Content marks rows that make a store not empty: a plain load into a
	// store holding such rows is refused.
	Content bool
	// NoMerge marks tables whose rows cannot be merged into a store that
	// holds rows of the table already: the spend ledger and its rollups,
	// which would count the merged events twice or not at all.
	NoMerge bool
}

// added, after a column's kind in cols, marks it DumpColumn.Added.
type addedMark struct{}

var added = addedMark{}

func cols(spec ...any) []DumpColumn {
	out := make([]DumpColumn, 0, len(spec)/2)
	for i := 0; i < len(spec); i += 2 {
		if _, ok := spec[i].(addedMark); ok {
			out[len(out)-1].Added = true
			i--
			continue
		}
		out = append(out, DumpColumn{Name: spec[i].(string), Kind: spec[i+1].(DumpColumnKind)})
	}
	return out
}

// Zero is the column kind's zero value, as a DumpRow holds it.
func (k DumpColumnKind) Zero() any {
	switch k {
	case DumpInt:
		return int64(0)
	case DumpBool:
		return false
	case DumpTime:
		return time.Time{}
	case DumpJSON:
		return "null"
	}
	return ""
}

// DumpTables are the tables that travel as rows, in dump order.
var DumpTables = []*DumpTable{
	// Spend event ids are per agent: the key is (agent, id).
	{Name: "spend_events", Key: 2, Content: true, NoMerge: true, Columns: cols(
		"agent", DumpText, "id", DumpText, "host", DumpText, "model", DumpText, "provider", DumpText, "tier", DumpText,
		"input_tokens", DumpInt, "output_tokens", DumpInt, "cost_micros", DumpInt, "priced_by_server", DumpBool,
		"task_id", DumpText, "occurred_at", DumpTime, "day", DumpText, "recorded_at", DumpTime)},
	{Name: "spend_daily", Key: 3, Content: true, NoMerge: true, Columns: cols(
		"dimension", DumpText, "day", DumpText, "key", DumpText, "cost_micros", DumpInt, "events", DumpInt,
		"input_tokens", DumpInt, "output_tokens", DumpInt)},
	// Voids travel with the ledger: the rollups already hold their net.
	{Name: "spend_voids", Key: 2, Content: true, NoMerge: true, Columns: cols(
		"agent", DumpText, "event_id", DumpText, "day", DumpText, "cost_micros", DumpInt, "input_tokens", DumpInt,
		"output_tokens", DumpInt, "reason", DumpText, "voided_by", DumpText, "voided_at", DumpTime)},
	{Name: "budgets", Key: 2, Content: true, Columns: cols(
		"scope", DumpText, "key", DumpText, "target_micros", DumpInt, "alert_micros", DumpInt, "cap_micros", DumpInt,
		"emergency_micros", DumpInt, "updated_at", DumpTime, "off", DumpBool, added)},
	{Name: "spend_reservations", Key: 1, Columns: cols(
		"id", DumpText, "agent", DumpText, "tier", DumpText, "model", DumpText, "task_id", DumpText,
		"estimate_micros", DumpInt, "day", DumpText, "created_at", DumpTime, "expires_at", DumpTime)},
	{Name: "spend_alerts", Key: 3, Columns: cols(
		"day", DumpText, "scope", DumpText, "key", DumpText, "threshold_micros", DumpInt, "spent_micros", DumpInt,
		"raised_at", DumpTime)},
	{Name: "emergency_stop", Key: 1, Singleton: true, Columns: cols(
		"id", DumpInt, "stopped", DumpBool, "reason", DumpText, "stopped_by", DumpText, "stopped_at", DumpTime,
		"paused_queue", DumpBool, "paused_tasks", DumpInt)},
	// Approvals, without their seq: a load numbers them in id order,
	// which is their creation order (ids are UUIDv7).
	{Name: "approvals", Key: 1, Content: true, Columns: cols(
		"id", DumpText, "what", DumpText, "why", DumpText, "agent", DumpText, "risk", DumpInt, "tier", DumpInt,
		"kind", DumpText, "payload_json", DumpText, "payload_sha256", DumpText, "deadline", DumpTime,
		"default_on_timeout", DumpInt, "task_id", DumpText, "reminder_at", DumpTime, "state", DumpInt,
		"auto_approved", DumpBool, "outcome", DumpInt, "decided_by", DumpText, "decided_at", DumpTime,
		"reason", DumpText, "instructions", DumpText, "reminded_at", DumpTime, "created_at", DumpTime)},
	// Alerts are not carried: they are derived from the state and the
	// evaluator re-derives them within one interval on the new store.
	// Silences are an operator's decisions, and are.
	{Name: "silences", Key: 1, Columns: cols(
		"id", DumpText, "rule", DumpText, "matchers", DumpJSON, "created_by", DumpText, "reason", DumpText,
		"starts_at", DumpTime, "ends_at", DumpTime, "created_at", DumpTime)},
	// Placements are operators' grants (which host's sidecar acts for
	// which agent), so they move with the tokens they go with.
	{Name: "agent_placements", Key: 1, Columns: cols(
		"agent", DumpText, "host", DumpText, "placed_by", DumpText, "placed_at", DumpTime)},
	{Name: "maintenance", Key: 1, Singleton: true, Columns: cols(
		"id", DumpInt, "active", DumpBool, "reason", DumpText, "started_at", DumpTime, "started_by", DumpText,
		"paused_queue", DumpBool)},
	// Selective pauses and the tasks each holds (after the tasks and the
	// pauses they name), so that a resume after a move still restores
	// exactly.
	{Name: "queue_pauses", Key: 1, Columns: cols(
		"id", DumpText, "reason", DumpText, "filter", DumpText, "created_at", DumpTime)},
	{Name: "task_pauses", Key: 1, Columns: cols(
		"task_id", DumpText, "pause_id", DumpText)},
}

// DumpTableNamed returns the table called name, or nil.
func DumpTableNamed(name string) *DumpTable {
	for _, t := range DumpTables {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// DumpRow is one row of a DumpTable: Values in the table's column order,
// each of its kind's Go type.
type DumpRow struct {
	Table  string
	Values []any
}

// KeyString names the row by its key, for messages.
func (r *DumpRow) KeyString(t *DumpTable) string {
	s := r.Table
	for i := 0; i < t.Key && i < len(r.Values); i++ {
		s += fmt.Sprintf(" %s=%v", t.Columns[i].Name, r.Values[i])
	}
	return s
}

func validateDumpRow(r *DumpRow) error {
	t := DumpTableNamed(r.Table)
	if t == nil {
		return InvalidField("records", "row of unknown table %q", r.Table)
	}
	if len(r.Values) != len(t.Columns) {
		return InvalidField("records", "%s row: %d values for %d columns", r.Table, len(r.Values), len(t.Columns))
	}
	for i, c := range t.Columns {
		ok := false
		switch v := r.Values[i].(type) {
		case string:
			ok = c.Kind == DumpText || (c.Kind == DumpJSON && json.Valid([]byte(v)))
		case int64:
			ok = c.Kind == DumpInt
		case bool:
			ok = c.Kind == DumpBool
		case time.Time:
			ok = c.Kind == DumpTime
		}
		if !ok {
			return InvalidField("records", "%s row: column %s holds %T, not a valid %s", r.Table, c.Name, r.Values[i], c.Kind)
		}
	}
	return nil
}

func (k DumpColumnKind) String() string {
	switch k {
	case DumpText:
		return "text"
	case DumpInt:
		return "integer"
	case DumpBool:
		return "boolean"
	case DumpTime:
		return "time"
	case DumpJSON:
		return "JSON text"
	}
	return "unknown"
}
