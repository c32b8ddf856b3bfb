// Package spec holds openapi.yaml embedded by oapi-codegen (GetSwagger), for validating events
// with kin-openapi without depending on the Echo server. Only `make generate` writes here.
package spec

//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen -config cfg.yaml ../../openapi.yaml
