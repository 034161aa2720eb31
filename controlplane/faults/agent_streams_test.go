//go:build faults

package faults_test

import "testing"

func hostileRow08RevokedStreams(t *testing.T) { t.Fatal("not contained yet") }
