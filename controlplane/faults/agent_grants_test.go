//go:build faults

package faults_test

import "testing"

func hostileRow03AdoptAgent(t *testing.T) { t.Fatal("not contained yet") }

func hostileRow04ClaimAnyRole(t *testing.T) { t.Fatal("not contained yet") }
