package access

import (
	"sync"
	"sync/atomic"
)

// recentTokens is how many of the latest tokens' hashes are remembered:
// far more than an operator makes between two calls of a new token.
const recentTokens = 1024

// createdTokens counts the tokens made here and remembers the hashes of
// the latest, for the failed-authentication guard in the gRPC layer.
type createdTokens struct {
	n      atomic.Uint64
	mu     sync.Mutex
	recent map[string]struct{}
	order  []string
}

func (c *createdTokens) note(hash string) {
	c.mu.Lock()
	if c.recent == nil {
		c.recent = map[string]struct{}{}
	}
	if _, ok := c.recent[hash]; !ok {
		if len(c.order) >= recentTokens {
			delete(c.recent, c.order[0])
			c.order = c.order[1:]
		}
		c.recent[hash] = struct{}{}
		c.order = append(c.order, hash)
	}
	c.mu.Unlock()
	c.n.Add(1)
}

// TokensCreated counts the tokens this service has made (attempts
// included, since a failed insert may have committed). A cache of secrets
// that failed to authenticate is valid only while it stays the same:
// a secret refused before a creation may name the token just created.
func (s *Service) TokensCreated() uint64 { return s.created.n.Load() }

// CreatedRecently reports whether one of the latest tokens made here has
// the secret hash: a token just made must work at once, even from an
// address whose failed authentications are over their limit.
func (s *Service) CreatedRecently(hash string) bool {
	s.created.mu.Lock()
	defer s.created.mu.Unlock()
	_, ok := s.created.recent[hash]
	return ok
}

// TokensReplaced tells the service that tokens changed behind its back
// (an import replaced or merged them): cached lookups and failures are
// void.
func (s *Service) TokensReplaced() {
	s.created.n.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	clear(s.cache)
}
