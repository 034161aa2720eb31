package cli

import "testing"

func TestParseDollarsIsExact(t *testing.T) {
	for in, want := range map[string]int64{
		"30": 30_000_000, "12.50": 12_500_000, "$0.000125": 125, ".5": 500_000, "1_000": 1_000_000_000,
		"0": 0, "0.1": 100_000, "19.99": 19_990_000, "100.000001": 100_000_001,
	} {
		got, err := parseDollars(in)
		if err != nil || got != want {
			t.Errorf("parseDollars(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "$", "-3", "1.0000001", "1e3", "12.5.0", "abc", "1,5", "99999999999"} {
		if v, err := parseDollars(in); err == nil {
			t.Errorf("parseDollars(%q) = %d, want an error", in, v)
		}
	}
}

func TestFormatMoney(t *testing.T) {
	for in, want := range map[int64]string{
		0: "$0.00", 12_340_000: "$12.34", 12_345_000: "$12.35", 715: "<$0.01", 5_000: "$0.01",
		1_234_567_000_000: "$1,234,567.00", -2_500_000: "-$2.50",
	} {
		if got := formatMoney(in); got != want {
			t.Errorf("formatMoney(%d) = %q, want %q", in, got, want)
		}
	}
}
