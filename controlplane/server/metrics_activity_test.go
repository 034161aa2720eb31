package server

import (
	"bufio"
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// scrapeSeries GETs /metrics and returns every sample: series (name and
// labels as exported) to value.
func scrapeSeries(t *testing.T, addr string) map[string]string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		out[line[:i]] = line[i+1:]
	}
	return out
}

// seriesLabels parses `name{k="v",...}` into its name and labels, without
// the scope's otel_scope_* labels.
func seriesLabels(series string) (string, map[string]string) {
	name, rest, _ := strings.Cut(series, "{")
	labels := map[string]string{}
	rest = strings.TrimSuffix(rest, "}")
	for rest != "" {
		k, after, _ := strings.Cut(rest, `="`)
		v, tail, _ := strings.Cut(after, `"`)
		if !strings.HasPrefix(k, "otel_scope_") {
			labels[k] = v
		}
		rest = strings.TrimPrefix(tail, ",")
	}
	return name, labels
}

// sample is the value of the one series of name whose labels are exactly
// want (besides "le" for a histogram's buckets when want names it).
func sample(t *testing.T, got map[string]string, name string, want map[string]string) string {
	t.Helper()
	var found []string
	for series, v := range got {
		n, labels := seriesLabels(series)
		if n == name && len(labels) == len(want) {
			ok := true
			for k, w := range want {
				ok = ok && labels[k] == w
			}
			if ok {
				found = append(found, v)
			}
		}
	}
	if len(found) != 1 {
		t.Errorf("%s%v: %d series with exactly these labels, want 1", name, want, len(found))
		return ""
	}
	return found[0]
}

// After tasks are completed and failed, spend reported with cache tokens
// (and a failed call), and a sidecar's reading of its host, a real scrape
// of a running control plane has every new series under exactly the names
// and labels the dashboards are written against.
func TestMetricsShowTaskDurationsSpendTokensRequestsAndHosts(t *testing.T) {
	p := startMetricsPlane(t, func(cfg *Config) { cfg.Alerts.Off = true })
	ctx, conn, clock := p.ctx, p.conn, p.clock
	q, f := factoryv1.NewQueueServiceClient(conn), factoryv1.NewFleetServiceClient(conn)

	// A sidecar's reading of its host (the numbers of sidecar/hoststat's
	// fixtures, this project's build machine).
	sctx, scancel := context.WithCancel(ctx)
	t.Cleanup(scancel)
	stream, _, err := connect(sctx, t, f, "gpu-01", "forge")
	if err != nil {
		t.Fatal(err)
	}
	tel := &factoryv1.Telemetry{CollectedAt: timestamppb.New(clock.Now()), Host: &factoryv1.HostReading{
		CpuUsageRatio: proto.Float64(0.5), MemoryTotalBytes: 24683772 * 1024, MemoryUsedBytes: 2552812 * 1024, Load1: 17.04, Load5: 18.58, Load15: 12.85,
		Networks: []*factoryv1.HostNetworkDevice{{Device: "ifb0"}, {Device: "eth0", ReceiveBytes: 288608845, TransmitBytes: 905866}}}}
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Telemetry{Telemetry: tel}}); err != nil {
		t.Fatal(err)
	}

	// Three attempts: done after 90 s, to review after 50 min, failed after 5 s.
	for range 3 {
		if _, err := q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "t", Role: "builder"}); err != nil {
			t.Fatal(err)
		}
	}
	claim := func() *factoryv1.Task {
		t.Helper()
		res, err := q.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge", Roles: []string{"builder"}, LeaseDuration: durationpb.New(time.Hour)})
		if err != nil || len(res.GetTasks()) != 1 {
			t.Fatalf("claim: %v %v", res, err)
		}
		return res.GetTasks()[0]
	}
	done := claim()
	clock.Advance(90 * time.Second)
	if _, err := q.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: done.GetId(), Agent: "forge", FencingToken: done.GetLease().GetToken()}); err != nil {
		t.Fatal(err)
	}
	review := claim()
	clock.Advance(50 * time.Minute)
	if _, err := q.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: review.GetId(), Agent: "forge", FencingToken: review.GetLease().GetToken(), Review: true}); err != nil {
		t.Fatal(err)
	}
	failed := claim()
	clock.Advance(5 * time.Second)
	if _, err := q.FailTask(ctx, &factoryv1.FailTaskRequest{TaskId: failed.GetId(), Agent: "forge", FencingToken: failed.GetLease().GetToken(), Error: "red", Permanent: true}); err != nil {
		t.Fatal(err)
	}

	// Spend: a call with prompt-cache reads and writes, the same call
	// again (a duplicate: counted once), and a failed call at no cost.
	ev := func(id string, cost int64, failed bool) *factoryv1.SpendEvent {
		return &factoryv1.SpendEvent{Id: id, Agent: "forge", Host: "gpu-01", Model: "claude-sonnet-4-5", Provider: "anthropic",
			Tier: factoryv1.SpendTier_SPEND_TIER_FRONTIER, InputTokens: 18650, OutputTokens: 1204, CacheReadTokens: 14336, CacheWriteTokens: 512,
			CostMicros: proto.Int64(cost), Failed: failed, OccurredAt: timestamppb.New(clock.Now())}
	}
	b := factoryv1.NewBudgetServiceClient(conn)
	for _, batch := range [][]*factoryv1.SpendEvent{{ev("call-1", 35303, false)}, {ev("call-1", 35303, false), ev("call-2", 0, true)}} {
		if _, err := b.ReportSpendBatch(ctx, &factoryv1.ReportSpendBatchRequest{Events: batch}); err != nil {
			t.Fatal(err)
		}
	}
	// The sidecar heartbeats after the clock's jumps, so its host is ONLINE.
	tel.CollectedAt = timestamppb.New(clock.Now())
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Telemetry{Telemetry: tel}}); err != nil {
		t.Fatal(err)
	}

	// The readings arrive on their own stream: scrape until they are in.
	var got map[string]string
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = scrapeSeries(t, p.metricsAddr)
		if _, ok := got[`factory_host_load1{host="gpu-01",otel_scope_name="github.com/factory/factory/controlplane/metrics",otel_scope_schema_url="",otel_scope_version=""}`]; ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	task := func(outcome string) map[string]string {
		return map[string]string{"agent": "forge", "role": "builder", "outcome": outcome}
	}
	with := func(m map[string]string, k, v string) map[string]string {
		out := map[string]string{k: v}
		for kk, vv := range m {
			out[kk] = vv
		}
		return out
	}
	spendLabels := map[string]string{"agent": "forge", "model": "claude-sonnet-4-5", "tier": "frontier", "provider": "anthropic"}
	request := func(status string) map[string]string {
		return map[string]string{"host": "gpu-01", "provider": "anthropic", "model": "claude-sonnet-4-5", "status": status}
	}
	host := map[string]string{"host": "gpu-01"}
	eth0 := map[string]string{"host": "gpu-01", "device": "eth0"}
	checks := []struct {
		name   string
		labels map[string]string
		want   string
	}{
		{"factory_task_duration_seconds_count", task("done"), "1"},
		{"factory_task_duration_seconds_sum", task("done"), "90"},
		{"factory_task_duration_seconds_bucket", with(task("done"), "le", "60"), "0"},
		{"factory_task_duration_seconds_bucket", with(task("done"), "le", "120"), "1"},
		{"factory_task_duration_seconds_sum", task("review"), "3000"},
		{"factory_task_duration_seconds_sum", task("failed"), "5"},
		{"factory_task_duration_seconds_bucket", with(task("failed"), "le", "1"), "0"},
		{"factory_task_duration_seconds_bucket", with(task("failed"), "le", "14400"), "1"},
		{"factory_agent_tasks_total", task("done"), "1"},
		{"factory_agent_tasks_total", task("review"), "1"},
		{"factory_agent_tasks_total", task("failed"), "1"},
		{"factory_spend_micros_total", spendLabels, "35303"},
		{"factory_llm_tokens_total", with(spendLabels, "type", "input"), "37300"},
		{"factory_llm_tokens_total", with(spendLabels, "type", "output"), "2408"},
		{"factory_llm_tokens_total", with(spendLabels, "type", "cache_read"), "28672"},
		{"factory_llm_tokens_total", with(spendLabels, "type", "cache_write"), "1024"},
		{"factory_llm_requests_total", request("success"), "1"},
		{"factory_llm_requests_total", request("failure"), "1"},
		{"factory_host_cpu_usage_ratio", host, "0.5"},
		{"factory_host_memory_used_bytes", host, "2.614079488e+09"},
		{"factory_host_memory_total_bytes", host, "2.5276182528e+10"},
		{"factory_host_load1", host, "17.04"},
		{"factory_host_network_receive_bytes_total", eth0, "2.88608845e+08"},
		{"factory_host_network_transmit_bytes_total", eth0, "905866"},
	}
	for _, c := range checks {
		if v := sample(t, got, c.name, c.labels); v != "" && v != c.want {
			t.Errorf("%s%v = %s, want %s", c.name, c.labels, v, c.want)
		}
	}
	// No other label sets under these names.
	wantKeys := map[string][]string{
		"factory_task_duration_seconds_count":       {"agent", "outcome", "role"},
		"factory_agent_tasks_total":                 {"agent", "outcome", "role"},
		"factory_spend_micros_total":                {"agent", "model", "provider", "tier"},
		"factory_llm_tokens_total":                  {"agent", "model", "provider", "tier", "type"},
		"factory_llm_requests_total":                {"host", "model", "provider", "status"},
		"factory_host_cpu_usage_ratio":              {"host"},
		"factory_host_network_receive_bytes_total":  {"device", "host"},
		"factory_host_network_transmit_bytes_total": {"device", "host"},
	}
	for series := range got {
		name, labels := seriesLabels(series)
		want, ok := wantKeys[name]
		if !ok {
			continue
		}
		var keys []string
		for k := range labels {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, want) {
			t.Errorf("%s has labels %v, want %v", series, keys, want)
		}
	}
}
