// Package spec holds openapi.yaml embedded by oapi-codegen (GetSwagger), for validating events
// with kin-openapi without depending on the Echo server, and a copy of the file itself (YAML),
// which the server serves at /openapi.yaml. Only `make generate` writes here, but for embed.go.
package spec

//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen -config cfg.yaml ../../openapi.yaml
//go:generate cp ../../openapi.yaml openapi.yaml
