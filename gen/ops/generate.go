// Package ops holds the code oapi-codegen generates from ops.yaml, the operator-facing API
// (health, readiness, metrics). Only `make generate` writes here.
package ops

//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen -config cfg.yaml ../../ops.yaml
