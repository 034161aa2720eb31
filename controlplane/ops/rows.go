package ops

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// A row of one of store.DumpTables is a line
//
//	{"kind":"row","row":{"table":"budgets","values":{"alert_micros":50000000,"key":"",...}}}
//
// with every column present, keys sorted: text as a string, integers as
// numbers (exact: read back without passing through a float), booleans,
// times in the dump's time layout or null, JSON columns as the JSON value
// itself with its keys sorted, so the line is canonical whichever driver
// wrote it (PostgreSQL's jsonb reorders keys).

type rowJSON struct {
	Table  string                     `json:"table"`
	Values map[string]json.RawMessage `json:"values"`
}

func toRowJSON(r *store.DumpRow) (*rowJSON, error) {
	t := store.DumpTableNamed(r.Table)
	if t == nil || len(r.Values) != len(t.Columns) {
		return nil, fmt.Errorf("row of table %q does not match its description", r.Table)
	}
	out := &rowJSON{Table: r.Table, Values: make(map[string]json.RawMessage, len(t.Columns))}
	for i, c := range t.Columns {
		var (
			b   []byte
			err error
		)
		switch v := r.Values[i].(type) {
		case time.Time:
			b, err = jsonTime(v).MarshalJSON()
		case string:
			if c.Kind == store.DumpJSON {
				b, err = canonicalJSON([]byte(v))
			} else {
				b, err = marshalNoEscape(v)
			}
		default:
			b, err = json.Marshal(v)
		}
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %w", r.Table, c.Name, err)
		}
		out.Values[c.Name] = b
	}
	return out, nil
}

func (rj *rowJSON) row() (*store.DumpRow, error) {
	t := store.DumpTableNamed(rj.Table)
	if t == nil {
		return nil, fmt.Errorf("row of unknown table %q", rj.Table)
	}
	if len(rj.Values) > len(t.Columns) {
		return nil, fmt.Errorf("%s row: %d values for %d columns", rj.Table, len(rj.Values), len(t.Columns))
	}
	values := make([]any, len(t.Columns))
	for i, c := range t.Columns {
		raw, ok := rj.Values[c.Name]
		if !ok && c.Added {
			// A dump written before the column was added.
			values[i] = c.Kind.Zero()
			continue
		}
		if !ok {
			return nil, fmt.Errorf("%s row: no value for column %s", rj.Table, c.Name)
		}
		v, err := decodeValue(c.Kind, raw)
		if err != nil {
			return nil, fmt.Errorf("%s row: column %s: %w", rj.Table, c.Name, err)
		}
		values[i] = v
	}
	return &store.DumpRow{Table: rj.Table, Values: values}, nil
}

func decodeValue(kind store.DumpColumnKind, raw json.RawMessage) (any, error) {
	switch kind {
	case store.DumpText:
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	case store.DumpInt:
		n, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("want an integer, not %s", raw)
		}
		return n, nil
	case store.DumpBool:
		var b bool
		err := json.Unmarshal(raw, &b)
		return b, err
	case store.DumpTime:
		var t jsonTime
		err := t.UnmarshalJSON(raw)
		return time.Time(t), err
	case store.DumpJSON:
		if !json.Valid(raw) {
			return nil, fmt.Errorf("not JSON: %s", raw)
		}
		b, err := canonicalJSON(raw)
		return string(b), err
	}
	return nil, fmt.Errorf("unknown column kind %d", kind)
}

// canonicalJSON re-encodes JSON with sorted keys and exact numbers.
func canonicalJSON(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return marshalNoEscape(v)
}

func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
