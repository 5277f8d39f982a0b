# The local test bed: a real Kubernetes control plane, CSI snapshots, pod exec, S3, PostgreSQL.
.PHONY: cluster-up cluster-down testbed-binaries
cluster-up: ## start the local test bed (idempotent; builds what is missing; writes .testbed/env)
	tests/cluster/up.sh

cluster-down: ## stop exactly what cluster-up started and remove its state
	tests/cluster/down.sh

testbed-binaries: ## build (or find cached) every test-bed binary
	tests/cluster/build.sh
