// Package adminapi is generated from admin.yaml, the config API: its models, a strict Echo
// server interface, a typed client and the embedded spec, with a copy of admin.yaml itself
// (SpecYAML). Only `make generate` writes it, but for embed.go.
package adminapi

//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen -config cfg.yaml ../../admin.yaml
//go:generate cp ../../admin.yaml admin.yaml
