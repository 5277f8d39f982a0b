# `make fuzz`: every decoder of the repository format under libFuzzer, briefly (FUZZ_SECONDS each).
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := blob index manifest sealed tree
.PHONY: fuzz
fuzz: ## fuzz every repository decoder for FUZZ_SECONDS each (installs cargo-fuzz; stable Rust with RUSTC_BOOTSTRAP)
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for target in $(FUZZ_TARGETS); do \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 || exit 1; \
	done
