# Rewind — every entry point a developer or CI needs. Each concern keeps its
# targets in mk/<concern>.mk; this file only wires them together.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export GOTOOLCHAIN := local

include $(sort $(wildcard mk/*.mk))

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'
