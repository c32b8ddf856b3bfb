// Package gen holds the code oapi-codegen generates from openapi.yaml: the models, the Echo
// ServerInterface, the typed ClientWithResponses and the embedded spec. Only `make generate`
// writes here; a change of behaviour starts in openapi.yaml.
package gen

//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen -config cfg.yaml ../openapi.yaml
