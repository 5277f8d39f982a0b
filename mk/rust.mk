# Rust build, unit tests and lints.
CARGO ?= cargo

.PHONY: build unit-test lint
build: ## build the rewind binary
	$(CARGO) build --release --locked

unit-test: ## unit tests only (no cluster needed)
	$(CARGO) test --locked --lib --bins

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
