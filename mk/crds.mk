# CRD YAML generated from src/api (never edited by hand; a unit test fails on drift).
.PHONY: crds
crds: ## regenerate crds/*.yaml from the Rust types
	mkdir -p crds
	$(CARGO) run --quiet --locked -- crd --write-dir crds
