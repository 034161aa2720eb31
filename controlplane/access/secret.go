package access

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
)

// SecretPrefix starts every token secret, so that secret scanners and
// people can tell a leaked factory token from other strings.
const SecretPrefix = "fct_"

// NewSecret returns a fresh secret: SecretPrefix and 32 random bytes,
// base64url-encoded.
func NewSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("token secret: %w", err)
	}
	return SecretPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// HashSecret is what the store keeps instead of a secret. A fast hash is
// enough: a secret has 256 bits of entropy, so nothing can be guessed from
// its hash, and a slow one would cost every call.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}
