//go:build faults

package faults_test

import "testing"

func floodRow07GhostAgents(t *testing.T) { t.Fatal("not bounded yet") }
