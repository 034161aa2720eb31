package access

import (
	"context"

	"google.golang.org/grpc/credentials"
)

// Bearer sends a token with every call of a client connection, as the
// metadata entry "authorization: Bearer <secret>".
type Bearer struct {
	Secret string
	// Plaintext allows sending it over a connection without TLS. Clients
	// set it only where their transport rules allow plaintext at all (a
	// loopback address, or an explicit --insecure); gRPC refuses to send
	// the token over plaintext otherwise.
	Plaintext bool
}

var _ credentials.PerRPCCredentials = Bearer{}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b Bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.Secret}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (b Bearer) RequireTransportSecurity() bool { return !b.Plaintext }
