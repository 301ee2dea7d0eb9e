// Package testsupport is what the tests of several packages share: a
// WebSocket client (gws) that records what the server sends, a client for
// a node's HTTP API, waits with deadlines, a test log writer, and the
// ports and programs tests take from the machine. It reaches servers by
// address only, so session's tests use it without linking a whole node.
//
// Its subpackages link more: clustertest waits on cluster.Cluster views
// (cluster's tests and nodetest use it); nodetest runs whole nodes in this
// process, alone or as a cluster (the root's tests).
//
// Only tests import these packages.
package testsupport

// Credentials of test nodes: nodetest.Config and the config files of
// tests that run the binary use these.
const (
	Secret = "test-jwt-secret-0123456789-abcdefghijklmnop" // auth.jwt_secret
	APIKey = "test-api-key"                                // auth.api_keys
)
