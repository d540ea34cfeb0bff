# The one test command: `make test` installs missing prerequisites (apt),
# starts fresh Firestore and Pub/Sub
# emulators, runs every test under the race detector with the
# emulator-backed ones required (they fail instead of skipping), and stops
# the emulators; then it runs the allocation guards again without -race.
SHELL := /bin/bash
GO ?= go

# Allocation guards assert testing.AllocsPerRun counts, which mean nothing
# under -race (it makes sync.Pool drop items; see internal/race), so they
# skip their assertions there and `make test` runs them a second time
# without it. An allocation guard is a test whose name contains "Alloc"
# (the pass prints which ran); name new ones so. The pass
# fails if no test matches, so renaming the guards cannot switch it off
# silently; it prints the guards that passed, or on a failure the go test
# output without the packages that have no guard.
ALLOC_GUARDS := Alloc

.PHONY: test test-short vet bench fuzz serve

test:
	./scripts/install-prereqs.sh
	./scripts/with-emulators.sh $(GO) test -race -count=1 ./...
	@echo "allocation guards (-run '$(ALLOC_GUARDS)'), without -race:"
	@out=$$($(GO) test -count=1 -run '$(ALLOC_GUARDS)' -v ./... 2>&1) || \
		{ grep -vE '^(=== RUN|PASS$$|testing: warning: no tests to run)|\[no test(s to run| files)\]$$' <<<"$$out"; exit 1; }; \
	passed=$$(grep '^--- PASS: Test' <<<"$$out") || \
		{ echo "no test matches -run '$(ALLOC_GUARDS)': the allocation guards did not run"; exit 1; }; \
	echo "$$passed"

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
