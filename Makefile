# hexmill — `make help` lists the targets.

GO       ?= go
PKGS     ?= ./...
# The tools module (tools/: hexmill-bench, hexmill-load) is a Go module of
# its own, which ./... at the root does not reach: build, test and lint
# run TOOLS_PKGS in it too (empty, or no tools/ in a fork: skip it).
TOOLS_PKGS ?= $(if $(wildcard tools/go.mod),./...)
BENCH_N  ?= 50000
BENCH_ROUNDS ?= 3
STRESS_HOGS  ?= 2
STRESS_COUNT ?= 3
STRESS_RUN   ?= E2E|Mosquitto

# SERVICE is the service's name: the directory cmd/<SERVICE>/ holding its
# service.go (`make rename NAME=...` renames it; the Makefile is the
# framework's and names no service).
SERVICE ?= $(notdir $(patsubst %/service.go,%,$(firstword $(wildcard cmd/*/service.go))))

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## build bin/<service> (cmd/<service>/) and run it (in-memory transport and demo unless configured otherwise); Ctrl-C stops it, exit 0
	@[ -n "$(SERVICE)" ] || { echo "make run: no cmd/<service>/service.go: the service's wiring is where make finds it (or SERVICE=...)"; exit 2; }
	$(GO) build -o bin/$(SERVICE) ./cmd/$(SERVICE)
	exec ./bin/$(SERVICE)

.PHONY: print-service
print-service: ## print the service's name (SERVICE: cmd/<service>/service.go)
	@echo $(SERVICE)

.PHONY: build
build: ## build bin/<service>, and the tools bin/hexmill-bench and bin/hexmill-load from tools/
	$(GO) build -o bin/ ./cmd/...
	$(if $(TOOLS_PKGS),cd tools && $(GO) build -o ../bin/ ./cmd/...)

.PHONY: test
test: ## all tests with -race, the tools' too: unit, and integration against the brokers in HEXMILL_TEST_* (or testcontainers)
	$(GO) test -race -count=1 -timeout 30m $(PKGS)
	$(if $(TOOLS_PKGS),cd tools && $(GO) test -race -count=1 -timeout 30m $(TOOLS_PKGS))

NO_BROKERS = env -u HEXMILL_TEST_RABBITMQ_URL -u HEXMILL_TEST_MQTT_URL -u HEXMILL_TEST_AMQP1_ADDR -u HEXMILL_TEST_POSTGRES_URL

.PHONY: test-unit
test-unit: ## tests without HEXMILL_TEST_* brokers (those skip; tests that start private brokers from installed binaries still run)
	$(NO_BROKERS) $(GO) test -race -short -count=1 $(PKGS)
	$(if $(TOOLS_PKGS),cd tools && $(NO_BROKERS) $(GO) test -race -short -count=1 $(TOOLS_PKGS))

.PHONY: test-integration
test-integration: ## integration tests: adapters, the binary, end to end, the tools (needs brokers)
	$(GO) test -race -count=1 -timeout 30m ./adapters/... ./integration/... ./cmd/...
	$(if $(TOOLS_PKGS),cd tools && $(GO) test -race -count=1 -timeout 30m $(TOOLS_PKGS))

.PHONY: test-e2e
test-e2e: ## end-to-end reliability tests on the real binary (kill, cut, restart, scale-out, bad input), CI size
	$(GO) test -race -count=1 -run E2E -v ./integration/

.PHONY: test-e2e-full
test-e2e-full: ## the same at full size (50k-150k messages per test)
	HEXMILL_E2E_FULL=1 $(GO) test -race -count=1 -timeout 60m -run E2E -v ./integration/

.PHONY: test-stress
test-stress: ## the end-to-end tests with STRESS_HOGS busy loops taking the cores (default 2), STRESS_COUNT runs each (default 3)
	@hogs=""; for i in $$(seq $(STRESS_HOGS)); do yes >/dev/null & hogs="$$hogs $$!"; done; \
	trap 'kill $$hogs 2>/dev/null' EXIT; \
	echo "test-stress: $(STRESS_HOGS) CPU hogs running"; \
	$(GO) test -race -count=$(STRESS_COUNT) -timeout 90m -run '$(STRESS_RUN)' -v ./integration/

.PHONY: bench
bench: ## hexmill vs the raw clients (tools/cmd/hexmill-bench), side by side in BENCH_ROUNDS interleaved rounds (median), ratio and CPU per message printed; report and charts into docs/bench
	cd tools && $(GO) run ./cmd/hexmill-bench -n $(BENCH_N) -rounds $(BENCH_ROUNDS) -report ../docs/bench

.PHONY: lint
lint: ## gofmt and go vet, the tools' too
	@files=$$(git ls-files --cached --others --exclude-standard '*.go' | while read -r f; do [ -e "$$f" ] && echo "$$f"; done); \
	out=$$(gofmt -l $$files) || exit 1; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(if $(TOOLS_PKGS),cd tools && $(GO) vet $(TOOLS_PKGS))

# govulncheck, pinned; VULN_DB is its database (a mirror where vuln.go.dev
# is out of reach).
GOVULNCHECK ?= golang.org/x/vuln/cmd/govulncheck@v1.10.0
VULN_DB     ?= https://vuln.go.dev

.PHONY: vuln
vuln: ## govulncheck (pinned) on the module and the tools; where its database VULN_DB cannot be reached, says so in one line and exits 0
	@probe="$(VULN_DB)/index/db.json.gz"; \
	if command -v curl >/dev/null 2>&1; then curl -fsS -m 10 -o /dev/null "$$probe" 2>/dev/null; \
	else wget -q -T 10 -t 1 -O /dev/null "$$probe" 2>/dev/null; fi; \
	if [ $$? -ne 0 ]; then echo "vuln: skipped: the vulnerability database $(VULN_DB) cannot be reached (set VULN_DB to a mirror)"; exit 0; fi; \
	set -ex; $(GO) run $(GOVULNCHECK) -db $(VULN_DB) $(PKGS); \
	$(if $(TOOLS_PKGS),cd tools && $(GO) run $(GOVULNCHECK) -db $(VULN_DB) $(TOOLS_PKGS))

.PHONY: api
api: ## regenerate api/ (the exported API of the packages a service imports) and print its hash, which CHANGELOG.md's latest section names (API: <hash>)
	$(GO) run ./internal/api

.PHONY: rename
rename: ## give the fork its service's name, in the service's files only (the module path stays): make rename NAME=fleet
	@[ -z "$(MODULE)" ] || { echo "make rename: MODULE= is gone: a fork keeps the module path github.com/hexmill/hexmill, so that upstream merges without conflicts (docs/fork.md); give NAME= only"; exit 2; }
	$(GO) run ./internal/rename -name "$(NAME)"

# REPLACE is where the new module's go.mod points its replace of the
# framework: this checkout unless given; none for a published version.
REPLACE ?= $(CURDIR)

.PHONY: new-service
new-service: ## write a service module of its own, requiring this framework (docs/fork.md): make new-service DIR=../fleet MODULE=example.com/fleet NAME=fleet [REPLACE=<framework checkout>|none]
	$(GO) run ./internal/newservice -dir "$(DIR)" -module "$(MODULE)" -name "$(NAME)" -replace "$(REPLACE)"

# YOURS is what a fork owns (docs/fork.md): in an upstream merge it stays
# as the fork has it, and upstream's sample stays out.
YOURS := domain cmd deploy docker-compose.yml Dockerfile

.PHONY: keep-yours
keep-yours: ## in an upstream merge (git merge --no-ff --no-commit upstream/main): keep domain/, cmd/, deploy/, docker-compose.yml, Dockerfile as HEAD has them; then git commit
	@git rev-parse -q --verify MERGE_HEAD >/dev/null || { echo "make keep-yours: no merge in progress: run git merge --no-ff --no-commit upstream/main first (docs/fork.md)"; exit 2; }
	@git diff -z --no-renames --name-only --diff-filter=A HEAD MERGE_HEAD -- $(YOURS) | xargs -0 -r rm -f --
	@git reset -q HEAD -- $(YOURS) >/dev/null
	@git ls-tree -z --name-only HEAD -- $(YOURS) | xargs -0 -r git checkout HEAD --
	@find domain cmd deploy -depth -type d -empty -delete 2>/dev/null || true
	@if git ls-files -u | grep -q .; then echo "make keep-yours: conflicts remain outside your files: a framework file was edited in this fork (docs/fork.md, Take an upgrade):"; git diff --name-only --diff-filter=U; exit 1; fi
	@echo "make keep-yours: your files are as HEAD has them; what upstream changed in its sample: git diff HEAD MERGE_HEAD -- $(YOURS)"

# docker compose (v2) where it is installed, else docker-compose (v1).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
# STATE=1: the service on PostgreSQL, with the state profile's postgres.
# A fork that deletes deploy/state.compose.yaml has no STATE=1.
COMPOSE_FILES = $(if $(STATE),$(if $(wildcard deploy/state.compose.yaml),-f docker-compose.yml -f deploy/state.compose.yaml --profile state,$(error STATE=1 needs deploy/state.compose.yaml, which this service does not have)))

.PHONY: up
up: ## start RabbitMQ, Mosquitto and the service (built from the Dockerfile) with docker compose; STATE=1 puts the service on PostgreSQL (deploy/state.compose.yaml), COMPOSE_PROFILES=tracing adds Jaeger; STACK_*_IMAGE/_PORT override images and ports
	$(COMPOSE) $(COMPOSE_FILES) up --build -d

.PHONY: down
down: ## stop what `make up` started and remove its containers and volumes
	$(COMPOSE) $(COMPOSE_FILES) down -v --remove-orphans
