# The one test command: `make test` starts fresh Firestore and Pub/Sub
# emulators, runs every test with the emulator-backed ones required (they
# fail instead of skipping), and stops the emulators.
SHELL := /bin/bash
GO ?= go

.PHONY: test test-short vet bench fuzz serve

test:
	./scripts/with-emulators.sh $(GO) test -race -count=1 ./...

# Without emulators: adapter tests that need one are skipped.
test-short:
	$(GO) test -count=1 ./...

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

bench:
	./scripts/with-emulators.sh $(GO) test -run '^$$' -bench . -benchmem ./...

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./internal/apikey

serve:
	$(GO) run ./cmd/keyplane serve

# Verify over loopback HTTP: keyplane serve against a bare net/http server,
# throughput (wrk) and latency at a fixed rate; see docs/benchmarks.md.
.PHONY: bench-http bench-flood
bench-http:
	./scripts/bench-http.sh

# Server memory under a flood of random well-formed keys; see docs/benchmarks.md.
bench-flood:
	./scripts/bench-flood.sh
