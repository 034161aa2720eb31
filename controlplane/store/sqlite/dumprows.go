package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// The rows of store.DumpTables, read and written from their description.
// SQLite keeps times as unix nanoseconds (0 or NULL when unset) and
// booleans as 0/1.

func dumpSelect(t *store.DumpTable) string {
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = c.Name
	}
	return "SELECT " + strings.Join(names, ", ") + " FROM " + t.Name + " ORDER BY " + strings.Join(names[:t.Key], ", ")
}

// dumpReadRows calls fn with every row of every dumped table, in order.
func dumpReadRows(ctx context.Context, tx *sql.Tx, fn func(*store.DumpRecord) error) error {
	for _, t := range store.DumpTables {
		err := eachRow(ctx, tx, dumpSelect(t), func(rs *sql.Rows) error {
			holders := make([]any, len(t.Columns))
			for i, c := range t.Columns {
				switch c.Kind {
				case store.DumpText, store.DumpJSON:
					holders[i] = new(sql.NullString)
				case store.DumpInt, store.DumpBool, store.DumpTime:
					holders[i] = new(sql.NullInt64)
				}
			}
			if err := rs.Scan(holders...); err != nil {
				return err
			}
			values := make([]any, len(t.Columns))
			for i, c := range t.Columns {
				switch c.Kind {
				case store.DumpText, store.DumpJSON:
					values[i] = holders[i].(*sql.NullString).String
				case store.DumpInt:
					values[i] = holders[i].(*sql.NullInt64).Int64
				case store.DumpBool:
					values[i] = holders[i].(*sql.NullInt64).Int64 != 0
				case store.DumpTime:
					values[i] = fromNanos(holders[i].(*sql.NullInt64).Int64)
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
	for _, t := range store.DumpTables {
		rs, err := d.w.query("SELECT EXISTS (SELECT 1 FROM " + t.Name + ")")
		if err != nil {
			return nil, err
		}
		var has bool
		if rs.Next() {
			err = rs.Scan(&has)
		}
		rs.Close()
		if err != nil {
			return nil, dbErr(d.w.op, err)
		}
		out[t.Name] = has
	}
	return out, nil
}

// notNull reports which columns of table are NOT NULL: an unset time is
// written as 0 there and as NULL elsewhere.
func (d *dumpTarget) notNull(table string) (map[string]bool, error) {
	rs, err := d.w.query("SELECT name, \"notnull\" FROM pragma_table_info(?)", table)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	out := map[string]bool{}
	for rs.Next() {
		var name string
		var nn int
		if err := rs.Scan(&name, &nn); err != nil {
			return nil, dbErr(d.w.op, err)
		}
		out[name] = nn != 0
	}
	return out, dbErr(d.w.op, rs.Err())
}

func (d *dumpTarget) InsertRows(t *store.DumpTable, rows [][]any, replace bool) (int, error) {
	notNull, err := d.notNull(t.Name)
	if err != nil {
		return 0, err
	}
	names := make([]string, len(t.Columns))
	marks := make([]string, len(t.Columns))
	var sets []string
	for i, c := range t.Columns {
		names[i], marks[i] = c.Name, "?"
		if i >= t.Key {
			sets = append(sets, c.Name+" = excluded."+c.Name)
		}
	}
	query := "INSERT INTO " + t.Name + " (" + strings.Join(names, ", ") + ") VALUES (" + strings.Join(marks, ", ") + ") ON CONFLICT "
	if replace && len(sets) > 0 {
		query += "(" + strings.Join(names[:t.Key], ", ") + ") DO UPDATE SET " + strings.Join(sets, ", ")
	} else {
		query += "DO NOTHING"
	}
	added := 0
	for _, values := range rows {
		args := make([]any, len(values))
		for i, c := range t.Columns {
			switch v := values[i].(type) {
			case bool:
				args[i] = boolInt(v)
			default:
				args[i] = v
			}
			if c.Kind == store.DumpTime {
				tv := values[i].(time.Time)
				switch {
				case !tv.IsZero():
					args[i] = toNanos(tv)
				case notNull[c.Name]:
					args[i] = int64(0)
				default:
					args[i] = nil
				}
			}
		}
		res, err := d.w.exec(query, args...)
		if err != nil {
			return 0, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, dbErr(d.w.op, err)
		}
		added += int(n)
	}
	return added, nil
}
