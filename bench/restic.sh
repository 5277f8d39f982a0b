# Sourced by the bench scripts: restic's current release built from the Go module proxy
# (Debian's 0.14 is years old) into $cache and put first on PATH; $cache must be set.
RESTIC_VERSION=0.18.1
restic_bin=$cache/restic-$RESTIC_VERSION
if [[ ! -x $restic_bin/restic ]]; then
  echo "bench: building restic $RESTIC_VERSION with go install (once; cached in $restic_bin)" >&2
  GOBIN=$restic_bin GOTOOLCHAIN=local CGO_ENABLED=0 \
    go install "github.com/restic/restic/cmd/restic@v$RESTIC_VERSION" >&2
fi
export PATH=$restic_bin:$PATH
