package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/factory/factory/controlplane/store"
)

// ErrRefused is an operation the fleet's state does not allow now:
// forgetting an ONLINE host without force, placing an agent on a drained
// host.
var ErrRefused = errors.New("refused")

// ForgetResult is what ForgetHost removed.
type ForgetResult struct {
	// Node is the host as it was; Known is false when only placements
	// named it.
	Node  Node
	Known bool
	// Unplaced are the agents whose placement on the host was removed,
	// sorted.
	Unplaced []string
}

// ForgetHost removes a host that is gone: from reg (its readings and the
// agents it declared) and every placement on it from p (nil: none kept).
// An ONLINE host is refused (ErrRefused) unless force: its sidecar is
// alive and would say Hello again. A host neither registered nor holding
// a placement is store.ErrNotFound.
func ForgetHost(ctx context.Context, reg *Registry, p *Placements, host string, force bool) (ForgetResult, error) {
	var res ForgetResult
	if n, ok := reg.Node(host); ok && n.State == StateOnline && !force {
		return res, fmt.Errorf("%w: host %s is ONLINE (last seen %s): stop its sidecar first, or forget it with force",
			ErrRefused, host, n.LastSeen.UTC().Format("2006-01-02T15:04:05Z"))
	}
	if p != nil {
		for {
			page, err := p.List(ctx, host, MaxPlacementPage, "")
			if err != nil {
				return res, err
			}
			for _, pl := range page.Placements {
				if _, err := p.Unplace(ctx, pl.Agent); err != nil && !errors.Is(err, store.ErrNotFound) {
					return res, err
				}
				res.Unplaced = append(res.Unplaced, pl.Agent)
			}
			if page.NextCursor == "" || len(page.Placements) == 0 {
				break
			}
		}
	}
	res.Node, res.Known = reg.forgetNode(host)
	if !res.Known && len(res.Unplaced) == 0 {
		return res, fmt.Errorf("%w: host %s is not registered and has no placement", store.ErrNotFound, host)
	}
	slices.Sort(res.Unplaced)
	return res, nil
}

// CheckPlaceable refuses (ErrRefused) a host that is drained: no agent
// is placed where no new work is to be claimed.
func (r *Registry) CheckPlaceable(host string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n, ok := r.nodes[host]; ok && n.Drained {
		return fmt.Errorf("%w: host %s is drained: undrain it first (factory nodes undrain %s)", ErrRefused, host, host)
	}
	return nil
}
