package store_test

import (
	"strings"
	"testing"

	"github.com/factory/factory/controlplane/store"
)

// TestIDPrefixRange: the upper bound steps only a letter or digit, so the
// range holds in byte order and under a collation that treats punctuation
// apart from letters and digits.
func TestIDPrefixRange(t *testing.T) {
	for _, c := range []struct{ prefix, hi string }{
		{"0190abc", "0190abd"},
		{"0190abc9", "0190abca"},
		{"0190abc9-", "0190abca"},
		{"deploy.", "deploz"},
		{"abz", "ac"},   // not "ab{"
		{"abZ", "ac"},   // not "ab["
		{"a9z-z", "aa"}, // 'z' and '-' go, then '9' steps to 'a'
		{"zz", ""},      // nothing to step: no upper bound
		{"---", ""},
	} {
		lo, hi := store.IDPrefixRange(c.prefix)
		if lo != c.prefix || hi != c.hi {
			t.Errorf("IDPrefixRange(%q) = %q, %q; want %q, %q", c.prefix, lo, hi, c.prefix, c.hi)
		}
		// Every id with the prefix lies in the range, in byte order.
		for _, tail := range []string{"", "0", "9", "A", "Z", "a", "z", "-", ".", "_", ":", "zzzz"} {
			id := c.prefix + tail
			if id < lo || (hi != "" && id >= hi) {
				t.Errorf("IDPrefixRange(%q) = [%q, %q) leaves out %q", c.prefix, lo, hi, id)
			}
		}
		if hi != "" && strings.ContainsAny(hi[len(hi)-1:], "-._:[{") {
			t.Errorf("IDPrefixRange(%q): upper bound %q ends in punctuation", c.prefix, hi)
		}
	}
}
