package postgres

import (
	"strings"
	"unicode/utf8"

	"github.com/factory/factory/controlplane/store"
)

// PostgreSQL text cannot hold a NUL byte or invalid UTF-8: the server
// rejects the whole statement. The driver checks text before sending it,
// so such input is an InvalidArgument naming its field (and, in a grouped
// transaction, fails only the call or item that carried it) instead of a
// database error.

// pgText reports whether s can be stored as PostgreSQL text.
func pgText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// checkText returns a FieldError for the first of pairs (field, value, ...)
// whose value PostgreSQL cannot store.
func checkText(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if !pgText(pairs[i+1]) {
			return store.InvalidField(pairs[i], "contains a NUL byte or invalid UTF-8")
		}
	}
	return nil
}

// checkTexts is checkText for a list of values in one field.
func checkTexts(field string, values []string) error {
	for _, v := range values {
		if !pgText(v) {
			return store.InvalidField(field, "contains a NUL byte or invalid UTF-8")
		}
	}
	return nil
}

// checkLease checks a lease reference's text.
func checkLease(ref store.LeaseRef) error {
	return checkText("task_id", ref.TaskID, "agent", ref.Agent)
}

// firstErr returns the first non-nil error.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
