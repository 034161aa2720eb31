//go:build faults

package faults_test

import "testing"

func hostileRow09PlaintextTarget(t *testing.T) { t.Fatal("not contained yet") }

func hostileRow10SpendEndpoint(t *testing.T) { t.Fatal("not contained yet") }

func hostileRow11TerminalEscapes(t *testing.T) { t.Fatal("not contained yet") }

func hostileRow13DataFileModes(t *testing.T) { t.Fatal("not contained yet") }
