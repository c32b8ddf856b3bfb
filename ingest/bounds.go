package ingest

import (
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/getkin/kin-openapi/openapi3"
)

// The cost of an event is bounded by its size, whatever it holds: JSON nesting as deep as the
// decoder allows (10 000 levels), arrays of thousands of items, thousands of repeated keys. The
// validator is the expensive part (kin-openapi allocates several errors per failing item, and
// its error messages render values), so what it sees is bounded here, and warnings are built from
// short pieces only. TestCostOfHostileEvents holds the worst cases found.

// maxValidationDepth is the deepest nesting of objects and arrays (the event itself being level 1)
// checked against the schema. An event with a described property nesting deeper skips the check
// with one schema_violation warning and is still stored. Real events nest a handful of levels.
const maxValidationDepth = 64

// maxValidatedItems is the number of items of an array the schema describes that are checked
// against it; the rest are not looked at, and one schema_violation warning says so. kin-openapi
// spends about 2 µs and 1 KB on each failing item, so a batch of consent_categories lists of
// 16 000 items each cost 0.5 s and 140 MB before this cut.
const maxValidatedItems = 1000

// The longest renderings of sent text (a value, a key, a path) and of a validator's reason in a
// warning's message: a message costs a few hundred bytes, never the size of what was sent.
const (
	maxValueInMessage  = 48
	maxReasonInMessage = 160
)

// clip cuts s to at most max bytes, at a character boundary, marking the cut with "...".
func clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// checkArraySchemas refuses a schema in which an array's checks would change when the array is
// cut to maxValidatedItems items: maxItems of maxValidatedItems or more (a longer array would
// pass), minItems over it (a long array would fail) and uniqueItems (repeats past the cut would
// go unseen).
func checkArraySchemas(schema *openapi3.Schema, path string, seen map[*openapi3.Schema]bool) error {
	if schema == nil || seen[schema] {
		return nil
	}
	seen[schema] = true
	if schema.Items != nil {
		if (schema.MaxItems != nil && *schema.MaxItems >= maxValidatedItems) || schema.MinItems > maxValidatedItems || schema.UniqueItems {
			return fmt.Errorf("the array %s has maxItems, minItems or uniqueItems that the validator's cut to %d items would change", path, maxValidatedItems)
		}
		if err := checkArraySchemas(schema.Items.Value, path+"/items", seen); err != nil {
			return err
		}
	}
	for name, p := range schema.Properties {
		if err := checkArraySchemas(p.Value, path+"/"+name, seen); err != nil {
			return err
		}
	}
	if schema.AdditionalProperties.Schema != nil {
		if err := checkArraySchemas(schema.AdditionalProperties.Schema.Value, path+"/additionalProperties", seen); err != nil {
			return err
		}
	}
	for _, refs := range []openapi3.SchemaRefs{schema.AllOf, schema.AnyOf, schema.OneOf} {
		for _, r := range refs {
			if err := checkArraySchemas(r.Value, path, seen); err != nil {
				return err
			}
		}
	}
	return nil
}

// arrayCut makes the view of an event the validator gets: every array the schema describes with
// more than maxValidatedItems items is cut to its first ones. Containers on the way to a cut are
// copied and the event itself is left alone, as the stored context is encoded from it.
type arrayCut struct {
	first string // the JSON pointer of the first array cut, in the order of sorted keys
	items int    // its length as sent
}

// view returns value as the validator is to see it under schema, and whether it differs.
func (c *arrayCut) view(schema *openapi3.Schema, value any, path []string) (any, bool) {
	if schema == nil {
		return value, false
	}
	changed := false
	for _, refs := range []openapi3.SchemaRefs{schema.AllOf, schema.AnyOf, schema.OneOf} {
		for _, r := range refs {
			if v, ok := c.view(r.Value, value, path); ok {
				value, changed = v, true
			}
		}
	}
	switch v := value.(type) {
	case map[string]any:
		var out map[string]any
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			sub := schema.AdditionalProperties.Schema
			if p := schema.Properties[k]; p != nil {
				sub = p
			}
			if sub == nil {
				continue
			}
			if w, ok := c.view(sub.Value, v[k], append(path, k)); ok {
				if out == nil {
					out = make(map[string]any, len(v))
					for k, x := range v {
						out[k] = x
					}
				}
				out[k] = w
			}
		}
		if out != nil {
			return out, true
		}
	case []any:
		if schema.Items == nil {
			break
		}
		var out []any
		if len(v) > maxValidatedItems {
			if c.first == "" {
				c.first, c.items = jsonPointer(path), len(v)
			}
			out = v[:maxValidatedItems:maxValidatedItems]
			v = out
		}
		for i, item := range v {
			switch item.(type) {
			case map[string]any, []any: // a scalar holds no array
			default:
				continue
			}
			if w, ok := c.view(schema.Items.Value, item, append(path, strconv.Itoa(i))); ok {
				if out == nil || &out[0] == &v[0] {
					out = slices.Clone(v)
				}
				out[i] = w
			}
		}
		if out != nil {
			return out, true
		}
	}
	return value, changed
}
