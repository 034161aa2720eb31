package console

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// reads runs a page's independent API reads at once, so a page costs its
// slowest read rather than their sum.
type reads struct {
	ctx  context.Context
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
	// unavailable names the optional reads this control plane does not
	// serve (UNIMPLEMENTED) or this session may not make
	// (PERMISSION_DENIED), with the API's words; the page shows n/a.
	unavailable map[string]string
}

func newReads(ctx context.Context) *reads {
	return &reads{ctx: ctx, unavailable: map[string]string{}}
}

// must runs a read the page cannot do without: its failure is the page's.
func (r *reads) must(read func(ctx context.Context) error) {
	r.wg.Go(func() {
		if err := read(r.ctx); err != nil {
			r.mu.Lock()
			r.errs = append(r.errs, err)
			r.mu.Unlock()
		}
	})
}

// optional runs a read whose section the page can show as not served.
func (r *reads) optional(name string, read func(ctx context.Context) error) {
	r.wg.Go(func() {
		err := read(r.ctx)
		if err == nil {
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if c := status.Code(err); c == codes.Unimplemented || c == codes.PermissionDenied {
			r.unavailable[name] = message(err)
			return
		}
		r.errs = append(r.errs, err)
	})
}

// wait waits for every read and returns the first failure, if any.
func (r *reads) wait() error {
	r.wg.Wait()
	if len(r.errs) > 0 {
		return r.errs[0]
	}
	return nil
}
