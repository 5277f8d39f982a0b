# `make run`: the operator on a sample account (the local test bed when no cluster is configured).
.PHONY: run
run: ## the whole story on the sample account `demo`: backup, restore into a new namespace, what came back beside the original; the operator keeps running until Ctrl-C
	hack/run.sh

.PHONY: install-plugin
install-plugin: ## build the release binary and link it as ~/.local/bin/kubectl-rewind (`kubectl rewind …`) and kubectl_complete-rewind (its completion)
	$(CARGO) build --release --locked
	mkdir -p $(HOME)/.local/bin
	ln -sf $(abspath $(or $(CARGO_TARGET_DIR),target))/release/rewind $(HOME)/.local/bin/kubectl-rewind
	ln -sf $(abspath $(or $(CARGO_TARGET_DIR),target))/release/rewind $(HOME)/.local/bin/kubectl_complete-rewind
	@echo "kubectl rewind is ready if ~/.local/bin is on your PATH (with completion: kubectl 1.26+)"
