package adminapi

import _ "embed" // for SpecYAML

// SpecYAML is admin.yaml byte for byte, which the admin listener serves at /admin.yaml. go:embed
// cannot reach the repository's root, so `make generate` copies the file here
// (gen/adminapi/admin.yaml) and `make gen-check` fails when the copy is stale. GetSwagger's
// document is the same spec, re-encoded by the generator.
//
//go:embed admin.yaml
var SpecYAML []byte
