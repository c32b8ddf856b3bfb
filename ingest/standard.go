package ingest

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
	"github.com/trackapi/trackapi/gen/spec"
)

// The standard events (page_view, purchase, ...) and the root properties each one requires come
// from the embedded spec, the StandardEvents schema's x-trackapi-required map, read once at
// startup: the spec, this check, the Go client's constructors and the README's table cannot
// drift apart (tests hold the last two to the spec). A standard event without one of them is still
// stored, with a missing_required_property warning in the vendor's words.

// standardSchema and requiredExtension name where the spec keeps the list.
const (
	standardSchema    = "StandardEvents"
	requiredExtension = "x-trackapi-required"
)

// requiredProperty is one property a standard event requires, with its warning made once at
// startup: checking an event then formats nothing.
type requiredProperty struct {
	name    string
	warning trackapi.Problem
}

// standardEvents maps a standard event's name to the properties it requires, in the spec's order.
type standardEvents map[string][]requiredProperty

// StandardEvents returns the standard events of the embedded spec, each with the root properties
// it requires (in the spec's order; an empty list for an event that requires none).
func StandardEvents() (map[string][]string, error) {
	doc, err := spec.GetSwagger()
	if err != nil {
		return nil, fmt.Errorf("loading the embedded spec: %w", err)
	}
	return requiredOf(doc)
}

// loadStandardEvents reads the rules of the standard events from the spec.
func loadStandardEvents(doc *openapi3.T) (standardEvents, error) {
	required, err := requiredOf(doc)
	if err != nil {
		return nil, err
	}
	events := make(standardEvents, len(required))
	for name, props := range required {
		rules := make([]requiredProperty, len(props))
		for i, prop := range props {
			rules[i] = requiredProperty{name: prop, warning: trackapi.Problem{
				Code:    string(gen.MissingRequiredProperty),
				Path:    jsonPointer([]string{prop}),
				Message: name + " event requires ." + prop + " property", // the vendor's words
			}}
		}
		events[name] = rules
	}
	return events, nil
}

// requiredOf reads and checks the x-trackapi-required map of the StandardEvents schema.
func requiredOf(doc *openapi3.T) (map[string][]string, error) {
	ref := doc.Components.Schemas[standardSchema]
	if ref == nil || ref.Value == nil {
		return nil, fmt.Errorf("the spec has no %s schema", standardSchema)
	}
	raw, ok := ref.Value.Extensions[requiredExtension].(map[string]any)
	if !ok || len(raw) == 0 {
		return nil, fmt.Errorf("the %s schema has no %s map of event names to property lists", standardSchema, requiredExtension)
	}
	out := make(map[string][]string, len(raw))
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		if name == "" {
			return nil, errors.New(requiredExtension + ": an empty event name")
		}
		list, ok := raw[name].([]any)
		if !ok {
			return nil, fmt.Errorf("%s: %s is not a list of property names", requiredExtension, name)
		}
		props := make([]string, 0, len(list))
		for _, p := range list {
			prop, ok := p.(string)
			if !ok || prop == "" || slices.Contains(props, prop) {
				return nil, fmt.Errorf("%s: %s lists %v, not a new property name", requiredExtension, name, p)
			}
			props = append(props, prop)
		}
		out[name] = props
	}
	return out, nil
}

// missingRequired appends to dst a warning for each property the standard event name requires
// that its root members lack (absent, or null: no value). Other events cost one map lookup.
func (s standardEvents) missingRequired(dst []trackapi.Problem, name string, members []member) []trackapi.Problem {
	for _, r := range s[name] {
		if v := lastMember(members, r.name); v == nil || string(v) == "null" {
			dst = append(dst, r.warning)
		}
	}
	return dst
}
