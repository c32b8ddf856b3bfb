package spec

import _ "embed" // for YAML

// YAML is openapi.yaml byte for byte. go:embed cannot reach the repository's root, so `make
// generate` copies the file here (gen/spec/openapi.yaml) and `make gen-check` fails when the copy
// is stale. GetSwagger's document is the same spec, re-encoded by the generator: serve this one.
//
//go:embed openapi.yaml
var YAML []byte
