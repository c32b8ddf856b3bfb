// Package echoapi holds the Echo ServerInterface that oapi-codegen generates from openapi.yaml,
// implemented by server/. Only `make generate` writes here.
package echoapi

//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen -config cfg.yaml ../../openapi.yaml
