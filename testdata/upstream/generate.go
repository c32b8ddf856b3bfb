// Package upstream is a client generated from the vendor's own spec file
// (http_tracking_api_spec.yaml, unchanged), used by the tests to prove that a client written
// against the vendor's file works against trackapi unchanged.
package upstream

//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen -config cfg.yaml http_tracking_api_spec.yaml
