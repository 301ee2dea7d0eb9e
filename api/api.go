// Package api holds the description of the node's HTTP API: an OpenAPI 3.1
// document, openapi.yaml, embedded in the binary and served by the node at
// GET /openapi.yaml. The conformance test (openapi_test.go at the root)
// checks the node's answers against it.
package api

import _ "embed"

//go:embed openapi.yaml
var openAPI []byte

// ContentType is the media type GET /openapi.yaml answers with.
const ContentType = "application/yaml"

// OpenAPI returns the OpenAPI 3.1 document of the node's HTTP API, in
// YAML. The bytes are shared: the caller must not modify them.
func OpenAPI() []byte { return openAPI }
