package main

import (
	"runtime/debug"
	"testing"
)

func TestTuneGCKeepsTheEnvironmentsChoice(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)

	tuneGC(func(string) string { return "150" })
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("with GOGC set, the GC target became %d, want it left alone (100)", got)
	}
	tuneGC(func(string) string { return "" })
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Fatalf("without GOGC, the GC target is %d, want %d", got, defaultGCPercent)
	}
}
