# `make test`: everything CI runs, in the order a failure is cheapest to find.
.PHONY: test e2e
test: ## everything CI runs: lints, unit tests, the test bed, then the end-to-end suites
	$(MAKE) lint
	$(CARGO) test --locked --lib --bins
	$(MAKE) cluster-up
	$(MAKE) e2e

e2e: ## the end-to-end suites against the running test bed (or REWIND_E2E_KUBECONFIG)
	$(CARGO) test --locked --tests
