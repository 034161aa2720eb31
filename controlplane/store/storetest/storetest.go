// Package storetest is the conformance suite for store.Store drivers. The
// queue's semantics (claim order, leases and fencing, dependencies, the
// transition table, pause and resume, paging) are proven here once and run
// against every driver, so SQLite and PostgreSQL cannot drift apart.
//
// A driver's test hands Run a constructor that returns a fresh, empty store
// and registers its own cleanup:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := mydriver.Open(t.Context(), ...)
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// Time comes only from the Now fields of the params: every test starts at a
// fixed instant and moves a fake clock forward explicitly, so lease expiry
// and backoff are exercised without sleeping and the results never depend
// on the machine's speed.
package storetest

import (
	"testing"

	"github.com/factory/factory/controlplane/store"
)

// Run runs the whole suite. newStore is called once per subtest and must
// return an empty store; most subtests run in parallel, so it must be safe to
// call concurrently.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	s := &suite{newStore: newStore}
	groups := []struct {
		name string
		run  func(*testing.T)
	}{
		{"Create", s.testCreate},
		{"Claim", s.testClaim},
		{"ClaimDeep", s.testClaimDeep},
		{"Dependencies", s.testDependencies},
		{"Lease", s.testLease},
		{"Retry", s.testRetry},
		{"Move", s.testMove},
		{"Pause", s.testPause},
		{"RequeueStuck", s.testRequeueStuck},
		{"List", s.testList},
		{"Stats", s.testStats},
		{"NextRunAfter", s.testNextRunAfter},
		{"SetPriority", s.testSetPriority},
		{"Bulk", s.testBulk},
		{"Concurrency", s.testConcurrency},
		{"Tokens", s.testTokens},
		{"TokenRotate", s.testTokenRotate},
		{"CreateHistory", s.testCreateHistory},
		{"Audit", s.testAudit},
		{"AuditCoalesce", s.testAuditCoalesce},
		{"Dump", s.testDump},
		{"DumpRows", s.testDumpRows},
		{"FleetEvents", s.testFleetEvents},
		{"Placements", s.testPlacements},
		{"Telemetry", s.testTelemetry},
		{"Spend", s.testSpend},
		{"Alerts", s.testAlerts},
		{"Maintenance", s.testMaintenance},
		{"Approvals", s.testApprovals},
		{"Tiers", s.testTiers},
		{"Results", s.testResults},
		{"Backups", s.testBackups},
		{"LeaseCap", s.testLeaseCap},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			g.run(t)
		})
	}
}

type suite struct {
	newStore func(t *testing.T) store.Store
}

// testCase is one subtest; it gets its own empty store.
type testCase struct {
	name string
	fn   func(t *testing.T, h *harness)
}

// runCases runs each case in parallel on a fresh store: no case can see
// another's tasks, so none depends on the order they run in.
func (s *suite) runCases(t *testing.T, cases []testCase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, s.setup(t))
		})
	}
}
