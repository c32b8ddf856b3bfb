// Package gen holds the models and the typed ClientWithResponses that oapi-codegen generates from
// openapi.yaml: what partners need, with no Echo and no kin-openapi behind it. The Echo server
// interface is in gen/echoapi and the embedded spec in gen/spec, generated from the same file
// with their own configs. Only `make generate` writes here; a change of behaviour starts in
// openapi.yaml.
package gen

//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen -config cfg.yaml ../openapi.yaml
