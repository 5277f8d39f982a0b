//go:build tools

// Package tools pins the two binaries `make bench-peer` builds from this module:
// the Velero server and CLI, and the AWS object-store plugin it loads from --plugin-dir.
package tools

import (
	_ "github.com/vmware-tanzu/velero-plugin-for-aws/velero-plugin-for-aws"
	_ "github.com/vmware-tanzu/velero/cmd/velero"
)
