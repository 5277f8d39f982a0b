//go:build tools

// Package etcd pins etcd for the test bed; see tests/cluster/build.sh.
package etcd

import _ "go.etcd.io/etcd/server/v3"
