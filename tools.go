//go:build tools

// This file pins the code generator in go.mod so that `make generate` runs the same version
// of oapi-codegen on every machine.
package trackapi

import _ "github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen"
