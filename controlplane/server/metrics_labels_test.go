package server

import "testing"

func TestOnlyKnownMethodsAreMeasured(t *testing.T) {
	for method, want := range map[string]bool{
		"/factory.v1.QueueService/ClaimTask":                        true,
		"/factory.v1.AccessService/ListAudit":                       true,
		"/grpc.health.v1.Health/Check":                              true,
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": true,
		"/factory.v1.QueueService/NoSuchMethod":                     false,
		"/invented.Service-12345/Method":                            false,
		"/factory.v1.QueueService":                                  false,
		"garbage":                                                   false,
	} {
		if got := knownMethod(method); got != want {
			t.Errorf("knownMethod(%q) = %v, want %v", method, got, want)
		}
	}
}
