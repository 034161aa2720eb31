package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/factory/factory/controlplane/store"
)

// The rows of store.DumpTables, read and written from their description.
// JSON columns are jsonb here, read as text; times are timestamptz, NULL
// when unset.

func dumpSelect(t *store.DumpTable) string {
	names := make([]string, len(t.Columns))
	exprs := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i], exprs[i] = c.Name, c.Name
		if c.Kind == store.DumpJSON {
			exprs[i] = c.Name + "::text"
		}
	}
	return "-- name: Dump_" + t.Name + "\nSELECT " + strings.Join(exprs, ", ") + " FROM " + t.Name +
		" ORDER BY " + strings.Join(names[:t.Key], ", ")
}

// dumpReadRows calls fn with every row of every dumped table, in order.
func dumpReadRows(ctx context.Context, tx pgx.Tx, fn func(*store.DumpRecord) error) error {
	for _, t := range store.DumpTables {
		err := eachRow(ctx, tx, dumpSelect(t), func(rs pgx.Rows) error {
			holders := make([]any, len(t.Columns))
			for i, c := range t.Columns {
				switch c.Kind {
				case store.DumpText, store.DumpJSON:
					holders[i] = new(pgtype.Text)
				case store.DumpInt:
					holders[i] = new(pgtype.Int8)
				case store.DumpBool:
					holders[i] = new(pgtype.Bool)
				case store.DumpTime:
					holders[i] = new(pgtype.Timestamptz)
				}
			}
			if err := rs.Scan(holders...); err != nil {
				return err
			}
			values := make([]any, len(t.Columns))
			for i, c := range t.Columns {
				switch c.Kind {
				case store.DumpText, store.DumpJSON:
					values[i] = holders[i].(*pgtype.Text).String
				case store.DumpInt:
					values[i] = holders[i].(*pgtype.Int8).Int64
				case store.DumpBool:
					values[i] = holders[i].(*pgtype.Bool).Bool
				case store.DumpTime:
					values[i] = fromTS(*holders[i].(*pgtype.Timestamptz))
				}
			}
			return fn(&store.DumpRecord{Row: &store.DumpRow{Table: t.Name, Values: values}})
		})
		if err != nil {
			return fmt.Errorf("dump %s: %w", t.Name, err)
		}
	}
	return nil
}

// dumpTablesHolding reports which dumped tables hold rows.
func (d *dumpTarget) dumpTablesHolding() (map[string]bool, error) {
	out := map[string]bool{}
	b := d.t.batch()
	for _, t := range store.DumpTables {
		b.Queue("SELECT EXISTS (SELECT 1 FROM " + t.Name + ")").QueryRow(func(r pgx.Row) error {
			var has bool
			err := r.Scan(&has)
			out[t.Name] = has
			return err
		})
	}
	return out, d.t.send(b)
}

func (d *dumpTarget) InsertRows(t *store.DumpTable, rows [][]any, replace bool) (int, error) {
	names := make([]string, len(t.Columns))
	marks := make([]string, len(t.Columns))
	var sets []string
	for i, c := range t.Columns {
		names[i], marks[i] = c.Name, "$"+strconv.Itoa(i+1)
		if c.Kind == store.DumpJSON {
			marks[i] += "::jsonb"
		}
		if i >= t.Key {
			sets = append(sets, c.Name+" = excluded."+c.Name)
		}
	}
	query := "-- name: DumpInsert_" + t.Name + "\nINSERT INTO " + t.Name + " (" + strings.Join(names, ", ") + ") VALUES (" +
		strings.Join(marks, ", ") + ") ON CONFLICT "
	if replace && len(sets) > 0 {
		query += "(" + strings.Join(names[:t.Key], ", ") + ") DO UPDATE SET " + strings.Join(sets, ", ")
	} else {
		query += "DO NOTHING"
	}
	added := 0
	b := d.t.batch()
	for _, values := range rows {
		args := make([]any, len(values))
		for i, v := range values {
			switch v := v.(type) {
			case time.Time:
				args[i] = ts(norm(v))
			case string:
				args[i] = storable(v)
			default:
				args[i] = v
			}
		}
		b.Queue(query, args...).Exec(func(ct pgconn.CommandTag) error {
			added += int(ct.RowsAffected())
			return nil
		})
	}
	if err := d.t.send(b); err != nil {
		return 0, err
	}
	return added, nil
}
