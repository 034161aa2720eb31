package metrics

import (
	"context"
	"fmt"
	"testing"

	"github.com/factory/factory/controlplane/budget"
	"github.com/factory/factory/controlplane/fleet"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// A sidecar is trusted for its own host's readings only, and an agent for
// its own calls: one inventing device, model, provider and host names by
// the thousand still adds at most MaxLabelValues values per label, and the
// honest host beside it keeps its host gauges. (Its device counters share
// the fleet-wide device limit, which the hostile host can fill.)
func TestHostileSidecarAndAgentCannotGrowSeries(t *testing.T) {
	const n = 5000
	hostile := hostReading()
	hostile.Networks = nil
	for i := range n {
		hostile.Networks = append(hostile.Networks, &factoryv1.HostNetworkDevice{Device: fmt.Sprintf("veth%05d", i), ReceiveBytes: 1, TransmitBytes: 1})
	}
	m, err := New(Config{Logger: quiet(), Sources: Sources{Fleet: fakeFleet{nodes: []fleet.Node{
		{Host: "evil", State: fleet.StateOnline, Telemetry: &factoryv1.Telemetry{Host: hostile}},
		{Host: "gpu-01", State: fleet.StateOnline, Telemetry: &factoryv1.Telemetry{Host: hostReading()}},
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	for i := range n {
		m.Spent(budget.Call{Agent: "evil", Host: fmt.Sprintf("h%05d", i), Model: fmt.Sprintf("m%05d", i),
			Provider: fmt.Sprintf("p%05d", i), Tier: "frontier", InputTokens: 1, CostMicros: 1})
	}
	got := scrape(t, m.Handler())
	for _, name := range []string{"factory_host_network_receive_bytes_total", "factory_host_network_transmit_bytes_total"} {
		if s := seriesOf(got, name); len(s) == 0 || len(s) > MaxLabelValues {
			t.Errorf("%s: %d series from %d devices, want 1..%d", name, len(s), n, MaxLabelValues)
		}
	}
	// One value per label past the limit folds into Other: at most
	// MaxLabelValues+1 per label, and these calls share one model and
	// provider per row, so the rows stay near that bound.
	for _, name := range []string{"factory_spend_micros_total", "factory_llm_requests_total"} {
		if s := seriesOf(got, name); len(s) == 0 || len(s) > 2*(MaxLabelValues+1) {
			t.Errorf("%s: %d series from %d invented names, want 1..%d", name, len(s), n, 2*(MaxLabelValues+1))
		}
	}
	if v := value(t, got, "factory_spend_micros_total", "model=other", "provider=other"); v != fmt.Sprint(n-MaxLabelValues) {
		t.Errorf("spend{model=other,provider=other} = %s, want the %d calls past the limit", v, n-MaxLabelValues)
	}
	if v := value(t, got, "factory_host_load1", "host=gpu-01"); v != "17.04" {
		t.Errorf("honest host's load1 = %s, want 17.04", v)
	}
}
