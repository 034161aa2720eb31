//go:build faults

package faults_test

import "testing"

func hostileRow05StealSpendID(t *testing.T) { t.Fatal("not contained yet") }

func hostileRow06OverflowDay(t *testing.T) { t.Fatal("not contained yet") }

func hostileRow07OneEventHaltsFleet(t *testing.T) { t.Fatal("not contained yet") }

func hostileRow12CounterCollision(t *testing.T) { t.Fatal("not contained yet") }
