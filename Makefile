# factory: control plane, sidecar and CLI.
# `make run` starts the control plane on SQLite under ./data; `make test` is what CI runs.
#
# Every port `make run` opens is a variable and everything it writes is under
# DATA_DIR, so a second factory on the same host needs only other values:
#   make run DATA_DIR=./data2 LISTEN=127.0.0.1:7430 METRICS=127.0.0.1:9474
# (SPEND and CONSOLE follow LISTEN by default: 7431 and 7432 there.)

GO        ?= go
BUF       := $(GO) tool -modfile=.tools/tools.mod buf
BIN       := bin
# The control plane's database and operator token, and the sidecar's spools
# under DATA_DIR/sidecar.
DATA_DIR  ?= ./data
# The control plane's gRPC address (the CLI's --addr).
LISTEN    ?= 127.0.0.1:7420
# The operator console: "auto" is loopback, two ports after LISTEN's (7422); "off" turns it off.
CONSOLE   ?= auto
# Prometheus metrics (/metrics, /healthz); "off" turns them off.
METRICS   ?= 127.0.0.1:9464
# The sidecar's loopback spend endpoint (POST /v1/spend): "auto" is the port
# after LISTEN's (7421, the sidecar's own default); "off" turns it off.
SPEND     ?= auto
LISTEN_PORT  = $(lastword $(subst :, ,$(LISTEN)))
spend_listen = $(if $(filter auto,$(SPEND)),127.0.0.1:$(if $(filter 0,$(LISTEN_PORT)),0,$(shell expr $(LISTEN_PORT) + 1)),$(SPEND))
# go-nvml's cgo headers warn about deprecated NVML calls it must still wrap.
export CGO_CFLAGS := -Wno-deprecated-declarations

BENCH_AGENTS ?= 32
BENCH_TASKS  ?= 20000
BENCH_BATCH  ?= 1

.PHONY: all build run test test-short test-race fuzz faults soak generate lint bench clean gpu-check screenshots

all: build

# Binaries carry their version: the module version or the VCS stamp
# (-buildvcs=auto, whatever GOFLAGS says), shown by --version and factory nodes.
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -o $(BIN)/factory-controlplane ./controlplane/cmd/factory-controlplane
	CGO_ENABLED=1 $(GO) build -buildvcs=auto -o $(BIN)/factory-sidecar ./sidecar/cmd/factory-sidecar
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -o $(BIN)/factory ./cli/cmd/factory

# The console's one-time sign-in link is printed once it listens.
# A sidecar for this host starts beside the control plane, so `factory nodes`,
# `factory gpu` and `factory health` show real readings at once. It connects
# with the operator token the control plane writes on its first start (the
# access policy lets an operator connect as any host), and goes when the
# control plane does. It keeps its spools under DATA_DIR/sidecar
# (STATE_DIRECTORY, as systemd would set it) rather than in ~/.local/state,
# which every sidecar of this user would share.
run: build
	@rm -f $(DATA_DIR)/console.link; \
	$(BIN)/factory-controlplane --data-dir $(DATA_DIR) --listen $(LISTEN) --console-listen $(CONSOLE) --metrics-listen "$(METRICS)" & cp=$$!; \
	trap '[ -n "$$sc" ] && kill $$sc 2>/dev/null && wait $$sc; kill $$cp 2>/dev/null; wait' INT TERM EXIT; \
	for i in $$(seq 100); do [ -s $(DATA_DIR)/operator.token ] && break; sleep 0.1; done; \
	for i in $$(seq 50); do [ -s $(DATA_DIR)/console.link ] && break; sleep 0.1; done; \
	[ -s $(DATA_DIR)/console.link ] && printf '\n  Console: open %s\n  (one-time sign-in link, valid 15 minutes; later, sign in with the token in %s/operator.token)\n\n' "$$(cat $(DATA_DIR)/console.link)" "$(DATA_DIR)"; \
	FACTORY_TOKEN="$$(cat $(DATA_DIR)/operator.token)" STATE_DIRECTORY=$(abspath $(DATA_DIR))/sidecar \
	  $(BIN)/factory-sidecar --addr $(LISTEN) --spend-listen $(spend_listen) $(if $(SIDECAR_CONFIG),--config $(SIDECAR_CONFIG)) & sc=$$!; \
	wait $$cp

# The whole suite: unit, conformance (SQLite always; PostgreSQL and Redis when
# FACTORY_TEST_POSTGRES_URL / FACTORY_TEST_REDIS_URL are set), bufconn handler
# tests and the end-to-end test that builds and runs the binaries. Suites
# without their server skip one test at a time, easy to miss among hundreds,
# so the last lines name what was skipped and why; the exit status is still
# go test's.
TEST_ALL  = $(GO) test -count=1 -timeout 20m ./...
TEST_RACE = $(GO) test -count=1 -timeout 20m -race ./controlplane/queue/... ./controlplane/server/...
test:
	@status=0; \
	echo '$(TEST_ALL)'; $(TEST_ALL) || status=$$?; \
	if [ $$status -eq 0 ]; then echo '$(TEST_RACE)'; $(TEST_RACE) || status=$$?; fi; \
	skipped=0; \
	if [ -z "$$FACTORY_TEST_POSTGRES_URL" ]; then skipped=1; echo "make test: PostgreSQL suites skipped (FACTORY_TEST_POSTGRES_URL unset)"; fi; \
	if [ -z "$$FACTORY_TEST_REDIS_URL" ]; then skipped=1; echo "make test: Redis suites skipped (FACTORY_TEST_REDIS_URL unset)"; fi; \
	if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && ! command -v google-chrome >/dev/null; then \
	  skipped=1; echo "make test: console browser tests skipped (no chromium, chromium-browser or google-chrome on PATH)"; fi; \
	[ $$skipped -eq 1 ] || echo "make test: no suite skipped (PostgreSQL, Redis and Chromium all present)"; \
	exit $$status

test-short:
	$(GO) test -short ./...

# Arbitrary bytes against request validation and the domain behind it, for a
# bounded time. The corpus under controlplane/server/testdata/fuzz also runs
# as plain test cases in `make test`.
FUZZTIME ?= 20s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzValidateCreateTask$$' -fuzztime $(FUZZTIME) ./controlplane/server/

# The fault suite (controlplane/faults): real processes, killed, cut off,
# out of disk and fed hostile input; nothing acknowledged may be lost or
# counted twice. PostgreSQL parts need FACTORY_TEST_POSTGRES_URL, the Redis
# part FACTORY_TEST_REDIS_URL. The PostgreSQL restart under load lives with
# the replica tests and runs here too. CI runs it (a few minutes).
faults:
	$(GO) test -count=1 -timeout 15m -tags faults -v ./controlplane/faults/
	$(GO) test -count=1 -timeout 10m -run 'TestPostgresRestartDuringLoad' ./controlplane/cmd/factory-controlplane/

# Ten minutes of 200 agents and 200 sidecars against one control plane:
# throughput, p99 latencies and RSS over time (SOAK_DURATION, SOAK_EVERY,
# SOAK_STORE=postgres://..., SOAK_REPORT=FILE). Not in CI.
SOAK_DURATION ?= 10m
soak:
	SOAK_DURATION=$(SOAK_DURATION) $(GO) test -count=1 -timeout 0 -tags soak -v -run TestSoak ./controlplane/faults/

# Go code into gen/, and the documented descriptor set that reflection serves
# (so `grpcurl describe` shows the API's comments).
generate:
	$(BUF) generate
	$(BUF) build --as-file-descriptor-set -o controlplane/server/api.binpb

lint:
	$(BUF) lint
	$(GO) vet ./...
	$(GO) vet -tags faults,soak ./controlplane/faults/
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Store benchmarks, then the queue benchmark over gRPC against a fresh
# control plane: one task per call, then batches of 50; then the spend
# ledger: one event per call, batches of 1000, and the 30-day report over a
# million seeded events. Every bench agent
# calls from 127.0.0.1, so the per-caller rate limit is off for it. The CLI
# finds the fresh control plane's operator token through FACTORY_DATA_DIR.
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 2s ./controlplane/store/... ./controlplane/alert ./controlplane/notify
	@dir=$$(mktemp -d); \
	$(BIN)/factory-controlplane --data-dir $$dir --listen 127.0.0.1:7499 --log-level warn --rate-limit 0 & pid=$$!; \
	trap "kill $$pid; rm -rf $$dir" EXIT; export FACTORY_DATA_DIR=$$dir; \
	for i in $$(seq 50); do $(BIN)/factory --addr 127.0.0.1:7499 queue stats >/dev/null 2>&1 && break; sleep 0.1; done; \
	$(BIN)/factory --addr 127.0.0.1:7499 bench queue --agents $(BENCH_AGENTS) --tasks $(BENCH_TASKS) --batch 1 && \
	$(BIN)/factory --addr 127.0.0.1:7499 bench queue --agents $(BENCH_AGENTS) --tasks 100000 --batch 50 && \
	$(BIN)/factory --addr 127.0.0.1:7499 bench spend --events 5000 --batch 1 --reporters 8 --queries 0 && \
	$(BIN)/factory --addr 127.0.0.1:7499 bench spend --events 200000 --batch 1000 --reporters 4 --seed 1000000 --report-days 30

# Build the sidecar and read every GPU through NVML, three passes back to back
# (the first includes NVML's init), printing the readings as JSON with each
# call's return code and timings. No control plane needed. Exit status 1 when
# no GPU could be read. SIDECAR_CONFIG=deploy/sidecar.yaml adds probes and disk.
gpu-check:
	@mkdir -p $(BIN)
	CGO_ENABLED=1 $(GO) build -buildvcs=auto -o $(BIN)/factory-sidecar ./sidecar/cmd/factory-sidecar
	$(BIN)/factory-sidecar --once -o json --samples 3 --require-gpu $(if $(SIDECAR_CONFIG),--config $(SIDECAR_CONFIG))

# The console's pictures for the README: a factory filled with a morning's
# work (tasks in every state, pending approvals, two agents' spend, firing
# alerts, a GPU host), every page at desktop (1280x900) and phone (390x844)
# sizes, full-page PNGs in deploy/console-screenshots. Needs Chromium.
screenshots:
	FACTORY_SCREENSHOTS=$(CURDIR)/deploy/console-screenshots $(GO) test -count=1 -run TestScreenshots ./controlplane/console/

clean:
	rm -rf $(BIN)
