package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func (h *harness) listTelemetry(p *store.TelemetryListParams) []*store.TelemetrySample {
	h.t.Helper()
	got, err := h.s.TelemetryList(h.ctx, p)
	if err != nil {
		h.t.Fatalf("TelemetryList: %v", err)
	}
	return got
}

func (h *harness) appendTelemetry(samples ...store.TelemetrySample) {
	h.t.Helper()
	if err := h.s.TelemetryAppend(h.ctx, &store.TelemetryAppendParams{Samples: samples}); err != nil {
		h.t.Fatalf("TelemetryAppend: %v", err)
	}
}

func (s *suite) testTelemetry(t *testing.T) {
	s.runCases(t, []testCase{
		{"AppendThenListRoundTrips", func(t *testing.T, h *harness) {
			at := h.now().Add(-time.Minute)
			body := `{"gpus":[{"name":"NVIDIA H100 80GB HBM3","memory_used":1024}]}`
			h.appendTelemetry(store.TelemetrySample{Host: "gpu-1", Time: at, JSON: body})
			got := h.listTelemetry(&store.TelemetryListParams{Host: "gpu-1"})
			if len(got) != 1 {
				t.Fatalf("listed %d samples, want 1", len(got))
			}
			if g := got[0]; g.Host != "gpu-1" || !g.Time.Equal(at) || g.JSON != body {
				t.Errorf("round trip: %+v", g)
			}
		}},
		{"ListFiltersByHostAndWindowInTimeOrder", func(t *testing.T, h *harness) {
			t0 := h.now().Add(-time.Hour)
			// Appended out of order: the list orders by time, not by insert.
			for _, m := range []int{3, 0, 2, 1} {
				h.appendTelemetry(store.TelemetrySample{Host: "a", Time: t0.Add(time.Duration(m) * time.Minute), JSON: "{}"})
			}
			h.appendTelemetry(store.TelemetrySample{Host: "b", Time: t0, JSON: "{}"})
			minutes := func(got []*store.TelemetrySample) []int {
				out := make([]int, len(got))
				for i, g := range got {
					out[i] = int(g.Time.Sub(t0) / time.Minute)
				}
				return out
			}
			cases := []struct {
				name string
				p    store.TelemetryListParams
				want []int
			}{
				{"all", store.TelemetryListParams{Host: "a"}, []int{0, 1, 2, 3}},
				{"since is inclusive", store.TelemetryListParams{Host: "a", Since: t0.Add(time.Minute)}, []int{1, 2, 3}},
				{"until is exclusive", store.TelemetryListParams{Host: "a", Until: t0.Add(2 * time.Minute)}, []int{0, 1}},
				{"window and limit", store.TelemetryListParams{Host: "a", Since: t0.Add(time.Minute), Until: t0.Add(time.Hour), Limit: 2}, []int{1, 2}},
				{"other host", store.TelemetryListParams{Host: "b"}, []int{0}},
				{"unknown host", store.TelemetryListParams{Host: "c"}, []int{}},
			}
			for _, c := range cases {
				got := minutes(h.listTelemetry(&c.p))
				if len(got) != len(c.want) {
					t.Errorf("%s: got minutes %v, want %v", c.name, got, c.want)
					continue
				}
				for i := range got {
					if got[i] != c.want[i] {
						t.Errorf("%s: got minutes %v, want %v", c.name, got, c.want)
						break
					}
				}
			}
		}},
		{"PruneDeletesOlderThanBefore", func(t *testing.T, h *harness) {
			t0 := h.now().Add(-10 * 24 * time.Hour)
			for d := range 10 {
				h.appendTelemetry(store.TelemetrySample{Host: "a", Time: t0.Add(time.Duration(d) * 24 * time.Hour), JSON: "{}"})
			}
			cut := t0.Add(3 * 24 * time.Hour)
			n, err := h.s.TelemetryPrune(h.ctx, &store.TelemetryPruneParams{Before: cut})
			if err != nil {
				t.Fatalf("TelemetryPrune: %v", err)
			}
			if n != 3 {
				t.Errorf("pruned %d, want 3", n)
			}
			got := h.listTelemetry(&store.TelemetryListParams{Host: "a"})
			if len(got) != 7 || !got[0].Time.Equal(cut) {
				t.Errorf("after prune: %d samples, first at %v; want 7 from %v", len(got), got[0].Time, cut)
			}
			if n, err := h.s.TelemetryPrune(h.ctx, &store.TelemetryPruneParams{Before: cut}); err != nil || n != 0 {
				t.Errorf("second prune: %d, %v; want 0, nil", n, err)
			}
		}},
		{"SampleWithoutHostOrTimeIsInvalid", func(t *testing.T, h *harness) {
			for _, x := range []store.TelemetrySample{{Time: h.now(), JSON: "{}"}, {Host: "a", JSON: "{}"}} {
				err := h.s.TelemetryAppend(h.ctx, &store.TelemetryAppendParams{Samples: []store.TelemetrySample{x}})
				if !errors.Is(err, store.ErrInvalidArgument) {
					t.Errorf("append %+v: %v, want a FieldError", x, err)
				}
			}
		}},
	})
}
