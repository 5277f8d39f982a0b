# config/default/operator.yaml is the chart rendered with default values (never edited by hand).
HELM ?= $(shell . .testbed/env 2>/dev/null && echo $$HELM || echo helm)
.PHONY: manifests
manifests: ## regenerate config/default/operator.yaml from the Helm chart
	$(HELM) template rewind charts/rewind --namespace rewind-system --skip-crds --kube-version 1.36.0 2>/dev/null > config/default/operator.yaml
