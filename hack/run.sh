#!/usr/bin/env bash
# `make run`: the operator on a sample account, against $KUBECONFIG or the local test bed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${KUBECONFIG:-}" ]] && ! kubectl cluster-info >/dev/null 2>&1; then
  echo "run: no cluster configured: bringing up the local test bed (make cluster-up)"
  make --no-print-directory cluster-up
fi
if [[ -f .testbed/env && -z "${KUBECONFIG:-}" ]]; then
  set -a; source .testbed/env; set +a
fi
KUBECTL=${KUBECTL:-kubectl}
state=.testbed/run
mkdir -p "$state/repository"
export REWIND_REPOSITORY="file://$PWD/$state/repository"
if [[ ! -f "$state/repository.key" ]]; then
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$state/repository.key"
fi
export REWIND_REPOSITORY_KEY_FILE="$PWD/$state/repository.key"

cargo build --release --locked --quiet
bin=${CARGO_TARGET_DIR:-target}/release/rewind
[[ -d "$state/repository/config" || -f "$state/repository/config" ]] || "$bin" repo init >/dev/null 2>&1 || true

"$KUBECTL" apply -k crds/ >/dev/null
# Polled, not `kubectl wait`: that fails at once on a CRD whose status has no condition yet.
for crd in accountbackups.rewind.dev backupschedules.rewind.dev projectrestores.rewind.dev; do
  for attempt in $(seq 1 60); do
    [[ $("$KUBECTL" get crd "$crd" -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}' 2>/dev/null) == True ]] && break
    ((attempt < 60)) || { echo "run: CRD $crd was not Established within 60s: kubectl get crd $crd -o yaml" >&2; exit 1; }
    sleep 1
  done
done
"$KUBECTL" create namespace rewind-system --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
"$KUBECTL" apply -f config/samples/account.yaml >/dev/null

# The operator runs with exactly the chart's permissions and under its tenant-isolation
# policies: its RBAC and policies are installed and, on the local bed, the operator
# impersonates the chart's ServiceAccount.
operator_kubeconfig=${KUBECONFIG:-$HOME/.kube/config}
if [[ -n "${HELM:-}" && -f .testbed/env ]]; then
  "$HELM" template rewind charts/rewind --namespace rewind-system --kube-version 1.36.0 \
    --show-only templates/serviceaccount.yaml --show-only templates/rbac-operator.yaml \
    --show-only templates/account-ownership.yaml 2>/dev/null | "$KUBECTL" apply -f - >/dev/null
  sed '/^  user:$/a\    as: system:serviceaccount:rewind-system:rewind-operator' "$KUBECONFIG" > "$state/kubeconfig-operator.yaml"
  operator_kubeconfig=$state/kubeconfig-operator.yaml
fi

# Established is not yet creatable: the mutating admission policy learns a new kind's schema a
# few seconds later (503 "Resource kind … not found" until then). Wait for a server-side dry run.
for attempt in $(seq 1 90); do
  "$KUBECTL" create --dry-run=server -f - >/dev/null 2>&1 <<'YAML' && break
apiVersion: rewind.dev/v1alpha1
kind: AccountBackup
metadata: {name: run-probe}
spec: {account: demo}
YAML
  ((attempt < 90)) || { echo "run: AccountBackups are not creatable 90s after their CRD was Established: kubectl create --dry-run=server" >&2; exit 1; }
  sleep 1
done

KUBECONFIG=$operator_kubeconfig "$bin" run --namespace rewind-system --identity make-run --probe-addr 127.0.0.1:18080 --log-format text > "$state/operator.log" 2>&1 &
operator=$!
trap 'kill $operator 2>/dev/null; wait $operator 2>/dev/null || true' EXIT
echo "run: operator started (pid $operator, log $state/operator.log)"

name="demo-$(date -u +%Y%m%d%H%M%S)"
sed "s/name: demo-now/name: $name/" config/samples/accountbackup.yaml | "$KUBECTL" create -f -
for _ in $(seq 1 120); do
  phase=$("$KUBECTL" get ab "$name" -o jsonpath='{.status.phase}' 2>/dev/null || true)
  case "$phase" in Completed|PartiallyFailed|Failed) break ;; esac
  sleep 1
done
"$KUBECTL" get ab "$name"
echo
echo "activity log:"
"$KUBECTL" get ab "$name" -o jsonpath='{range .status.activity[*]}{.time}  {.level}  {.message}{"\n"}{end}'
echo
echo "repository:"
"$bin" repo ls
echo
"$KUBECTL" get rewind
[[ "$phase" == Completed ]] || { echo "run: the backup ended $phase; see $state/operator.log"; exit 1; }
