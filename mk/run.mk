# `make run`: the operator on a sample account (the local test bed when no cluster is configured).
.PHONY: run
run: ## run the operator on the sample account `demo` and show the backup it takes
	hack/run.sh
