# trackapi's tasks. `make run` starts the server on the embedded SQLite store; `make test` runs
# everything CI checks. Both install what they need (Go modules, oasdiff, the Spectral linter)
# into .tools/ on first use.

GO            ?= go
TOOLS         := $(CURDIR)/.tools
OASDIFF       := $(TOOLS)/bin/oasdiff
SPECTRAL      := $(TOOLS)/spectral/node_modules/.bin/spectral
REDOCLY       := $(TOOLS)/redocly/node_modules/.bin/redocly
PRISM         := $(TOOLS)/prism/node_modules/.bin/prism
OAPI_CODEGEN  := $(GO) run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen
UPSTREAM_SPEC := testdata/upstream/http_tracking_api_spec.yaml
RELEASED_ADMIN := testdata/released/admin.yaml
ADDR          ?= :8080
DATA          ?= ./trackapi-data
FUZZTIME      ?= 10s

.PHONY: hostile all generate check gen-check deps-check fmt-check lint breaking vet build run bench test unit fuzz prism tools clean screenshots

all: build

## generate: rewrite gen/ (collect API: models and client in gen/, embedded spec and a copy of openapi.yaml in gen/spec/, Echo server in gen/echoapi/), gen/ops/ (operations API), gen/adminapi/ (config API, with a copy of admin.yaml) and the vendor-spec client from their specs (the only way gen/ changes)
generate:
	$(GO) generate ./gen/... ./testdata/upstream/

## check: fail when generated code is stale or edited by hand, Go code is not gofmt'ed, or the
## partners' client depends on the server's libraries
check: gen-check fmt-check deps-check

# Each generated file with the config and spec it comes from (paths relative to the config's folder).
GENERATED := gen/cfg.yaml:../openapi.yaml:api.gen.go \
             gen/spec/cfg.yaml:../../openapi.yaml:spec.gen.go \
             gen/echoapi/cfg.yaml:../../openapi.yaml:echoapi.gen.go \
             gen/ops/cfg.yaml:../../ops.yaml:ops.gen.go \
             gen/adminapi/cfg.yaml:../../admin.yaml:adminapi.gen.go \
             testdata/upstream/cfg.yaml:http_tracking_api_spec.yaml:client.gen.go

# Each spec with the copy that `make generate` puts beside the generated code for go:embed, which
# cannot reach the repository's root: the server serves these copies as /openapi.yaml and
# /admin.yaml, which must be the files themselves.
COPIED := openapi.yaml:gen/spec/openapi.yaml \
          admin.yaml:gen/adminapi/admin.yaml

gen-check:
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	for g in $(GENERATED); do \
	  cfg=$${g%%:*}; rest=$${g#*:}; spec=$${rest%%:*}; out=$${rest#*:}; dir=$$(dirname $$cfg); \
	  sed "s|^output: .*|output: $$tmp/$$out|" $$cfg > $$tmp/cfg.yaml && \
	  (cd $$dir && $(OAPI_CODEGEN) -config $$tmp/cfg.yaml $$spec) || exit 1; \
	  cmp -s $$tmp/$$out $$dir/$$out || { echo "$$dir/$$out differs from what the generator makes from $$spec: run 'make generate' (never edit generated files by hand)"; exit 1; }; \
	done
	@for c in $(COPIED); do \
	  spec=$${c%%:*}; copy=$${c#*:}; \
	  cmp -s $$spec $$copy || { echo "$$copy is not a copy of $$spec: run 'make generate' (never edit generated files by hand)"; exit 1; }; \
	done
	@echo "gen-check: generated code and the embedded copies match the specs"

# The partners' client (client/ and the models it uses in gen/) must build without Echo and
# kin-openapi: a partner importing it should not get the server's dependencies.
deps-check:
	@bad=$$($(GO) list -deps ./client | grep -E 'labstack/echo|getkin/kin-openapi' || true); \
	if [ -n "$$bad" ]; then echo "client/ depends on server libraries:"; echo "$$bad"; exit 1; fi
	@echo "deps-check: client/ pulls in neither Echo nor kin-openapi"

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.tools/*')); \
	if [ -n "$$out" ]; then echo "not gofmt'ed:"; echo "$$out"; exit 1; fi

## lint: the three specs with Spectral (spectral:oas) and Redocly (recommended-strict, redocly.yaml);
## fails on any finding of either
lint: $(SPECTRAL) $(REDOCLY)
	$(SPECTRAL) lint openapi.yaml ops.yaml admin.yaml --ruleset .spectral.yaml --fail-severity warn
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true $(REDOCLY) lint openapi.yaml ops.yaml admin.yaml --config redocly.yaml

## breaking: openapi.yaml must not break clients of the vendor's spec, and admin.yaml must not
## break clients of the config API as last released (testdata/released/admin.yaml; a release
## copies admin.yaml there)
# The vendor's server URL ends in /events and its paths are below it; openapi.yaml has the real
# paths under a server URL without it, so the vendor's paths get that prefix before comparing.
breaking: $(OASDIFF)
	$(OASDIFF) breaking $(UPSTREAM_SPEC) openapi.yaml --prefix-base /events --fail-on ERR
	@echo "oasdiff: no breaking change against the vendor's spec"
	$(OASDIFF) breaking $(RELEASED_ADMIN) admin.yaml --fail-on ERR
	@echo "oasdiff: no breaking change against the released config API ($(RELEASED_ADMIN))"

vet:
	$(GO) vet ./... ./testdata/upstream/

build:
	$(GO) build -o bin/trackapi ./cmd/trackapi

## run: the server on the embedded SQLite store (ADDR=:8080 DATA=./trackapi-data)
run: build
	./bin/trackapi serve --addr $(ADDR) --data $(DATA)

## bench: the hot-path micro-benchmarks, then bin/trackapi end to end beside a bare Echo server on
## this machine, and with two webhook destinations (about 3 minutes; BENCHFLAGS="-duration 10s
## -scenarios single-c50,single-c50-2hooks" and so on)
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./server/ ./sqlite/
	$(GO) test -run '^$$' -bench InspectorPaired -benchtime 200x ./ingest/
	$(GO) run ./bench -binary bin/trackapi $(BENCHFLAGS)

## test: everything CI checks
test: check lint breaking vet unit fuzz prism

unit:
	$(GO) test -race -count=1 ./...

## screenshots: PNGs of the web UI's screens and of the two docs pages, in docs/screenshots/ (for the
## README), taken by headless Chromium from the real binary on seeded data
screenshots:
	SCREENSHOTS=$(CURDIR)/docs/screenshots $(GO) test -count=1 -run '^TestScreenshots$$' -v ./cmd/trackapi/

## prism: Stoplight Prism as a validating proxy built from openapi.yaml, in front of bin/trackapi
## (127.0.0.1 only, bounded): the README's examples, serve's first-start curl, the spec's request
## examples and testdata/events go through it; fails on a violation either way, on a request the
## spec refuses and the server stores, and on a README answer the server does not give
prism: build $(PRISM)
	TRACKAPI_PRISM=$(PRISM) TRACKAPI_BIN=$(CURDIR)/bin/trackapi $(GO) test -count=1 -timeout 5m -run '^TestThroughPrism$$' -v ./internal/prismcheck/

## hostile: the hostile senders' cases against the real binary (127.0.0.1 only, bounded): each
## asserts the server's CPU, peak memory and answer sizes, and that an honest sender is served
hostile:
	$(GO) test -count=1 -run '^(TestHostile|TestLowOpenFileLimit|TestTrustedProxiesFlag)' -v ./cmd/trackapi/

## fuzz: each fuzz target for FUZZTIME, seeded from testdata/events (both endpoints, and the JSON walker
## against encoding/json), the timestamp's conversion against math/big, then the config API's cursors,
## the destinations' filters and the pixel's query
fuzz:
	$(GO) test ./server/ -run '^$$' -fuzz '^FuzzCollectEvent$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10x
	$(GO) test ./server/ -run '^$$' -fuzz '^FuzzCollectBatch$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10x
	$(GO) test ./ingest/ -run '^$$' -fuzz '^FuzzWalkers$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10x
	$(GO) test ./ingest/ -run '^$$' -fuzz '^FuzzProcess$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10x
	$(GO) test ./ingest/ -run '^$$' -fuzz '^FuzzTimestamp$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10x
	$(GO) test ./admin/ -run '^$$' -fuzz '^FuzzParseCursor$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10x
	$(GO) test ./deliver/ -run '^$$' -fuzz '^FuzzParseFilter$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10x
	$(GO) test ./server/ -run '^$$' -fuzz '^FuzzPixelEvent$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10x

tools: $(OASDIFF) $(SPECTRAL) $(REDOCLY) $(PRISM)

$(OASDIFF):
	GOBIN=$(TOOLS)/bin $(GO) install github.com/oasdiff/oasdiff@v1.37.0

# Each npm tool has a prefix of its own: `npm install --no-save` removes from its prefix what that
# prefix's package.json does not name, so a second tool installed beside the first removes it.
$(SPECTRAL):
	npm install --no-save --no-audit --no-fund --prefix $(TOOLS)/spectral @stoplight/spectral-cli@6.16.3

$(REDOCLY):
	npm install --no-save --no-audit --no-fund --prefix $(TOOLS)/redocly @redocly/cli@2.77.0

$(PRISM):
	npm install --no-save --no-audit --no-fund --prefix $(TOOLS)/prism @stoplight/prism-cli@5.16.0

clean:
	rm -rf bin $(TOOLS)
