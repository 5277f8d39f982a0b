# `make test`: everything CI runs, in the order a failure is cheapest to find.
.PHONY: test e2e chart-lint
test: ## everything CI runs: format, clippy, unit tests (CRD drift among them), the test bed, helm lint, e2e
	$(MAKE) lint
	$(CARGO) test --locked --lib --bins
	$(MAKE) cluster-up
	$(MAKE) chart-lint
	$(MAKE) e2e

chart-lint: ## helm lint of charts/rewind with the test bed's helm
	set -a && . .testbed/env && $$HELM lint --strict charts/rewind

e2e: ## the end-to-end suites against the running test bed (or REWIND_E2E_KUBECONFIG)
	$(CARGO) test --locked --tests

.PHONY: chaos
chaos: ## the chaos suite in full: 30 backup/restore cycles under kills, S3 faults and an API server restart (REWIND_CHAOS_SEED=… repeats a run)
	$(MAKE) cluster-up
	REWIND_CHAOS_CYCLES=$${REWIND_CHAOS_CYCLES:-30} $(CARGO) test --locked --test chaos_e2e -- --nocapture
