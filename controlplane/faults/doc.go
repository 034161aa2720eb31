// Package faults is the fault and load suite: it starts the real binaries
// (control plane, sidecars) as processes, drives them with simulated
// agents, injects faults (kill -9, a cut network, a database restart, a
// full disk, hostile input) and checks that nothing acknowledged is lost
// or counted twice.
//
// The tests carry the build tag "faults" (`make faults`, also run by CI,
// bounded to a few minutes); the soak carries "soak" (`make soak`, ten
// minutes, not in CI).
package faults
