//go:build faults

package faults_test

import "testing"

func floodRow04LargePayloads(t *testing.T) { t.Fatal("not bounded yet") }
