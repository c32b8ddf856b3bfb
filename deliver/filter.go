package deliver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/trackapi/trackapi"
)

// The condition operators, after the vendor's simple filters.
const (
	OpIs          = "is"
	OpIsNot       = "is_not"
	OpContains    = "contains"
	OpNotContains = "not_contains"
	OpStartsWith  = "starts_with"
	OpEndsWith    = "ends_with"
	OpMatches     = "matches"
	OpNotMatches  = "not_matches"
	OpExists      = "exists"
	OpNotExists   = "not_exists"
	OpIsEmpty     = "is_empty"
)

// Limits of a filter, so that what one destination costs per event is bounded.
const (
	maxConditions   = 50
	maxEventNames   = 1000
	maxPatternBytes = 1024
	maxValueBytes   = 4096
)

// Filter is a destination's condition filter: an event passes when its name is in EventNames
// (when that list is not empty), not in ExcludeEventNames, and every condition holds.
type Filter struct {
	EventNames        []string    `json:"event_names,omitempty"`
	ExcludeEventNames []string    `json:"exclude_event_names,omitempty"`
	Conditions        []Condition `json:"conditions,omitempty"`
}

// Condition tests one value of the event, found by a JSON pointer (RFC 6901) such as
// "/page_type" or "/user/consent_categories". Values are compared as strings: a number's text,
// true, false; an array value "contains" a value when one of its elements is equal to it.
type Condition struct {
	Path  string          `json:"path"`
	Op    string          `json:"op"`
	Value json.RawMessage `json:"value,omitempty"`

	segments []string
	text     string
	re       *regexp.Regexp
}

// ParseFilter reads and checks a filter given as JSON (empty: no filter, nil). Every mistake is
// reported here, when the destination is made: an unknown field or operator, a path that is not
// a JSON pointer, a missing or extra value, a pattern that does not compile. A filter that parsed
// never fails at delivery time.
func ParseFilter(raw []byte) (*Filter, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var f Filter
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	if dec.More() {
		return nil, errors.New("filter: unexpected data after the JSON object")
	}
	if len(f.EventNames)+len(f.ExcludeEventNames) > maxEventNames {
		return nil, fmt.Errorf("filter: at most %d event names", maxEventNames)
	}
	if len(f.Conditions) > maxConditions {
		return nil, fmt.Errorf("filter: at most %d conditions", maxConditions)
	}
	for i := range f.Conditions {
		if err := f.Conditions[i].compile(); err != nil {
			return nil, fmt.Errorf("filter: condition %d: %w", i, err)
		}
	}
	return &f, nil
}

func (c *Condition) compile() error {
	if !strings.HasPrefix(c.Path, "/") {
		return fmt.Errorf("path %q must be a JSON pointer such as /page_type", c.Path)
	}
	for _, s := range strings.Split(c.Path[1:], "/") {
		c.segments = append(c.segments, strings.NewReplacer("~1", "/", "~0", "~").Replace(s))
	}
	needsValue := true
	switch c.Op {
	case OpIs, OpIsNot, OpContains, OpNotContains, OpStartsWith, OpEndsWith, OpMatches, OpNotMatches:
	case OpExists, OpNotExists, OpIsEmpty:
		needsValue = false
	default:
		return fmt.Errorf("unknown op %q (is, is_not, contains, not_contains, starts_with, ends_with, matches, not_matches, exists, not_exists, is_empty)", c.Op)
	}
	if !needsValue {
		if len(c.Value) > 0 {
			return fmt.Errorf("op %s takes no value", c.Op)
		}
		return nil
	}
	if len(c.Value) == 0 || string(c.Value) == "null" {
		return fmt.Errorf("op %s needs a value", c.Op)
	}
	// The bound is on the value's text: its JSON may be up to 6 times longer (\u escapes, which
	// a re-marshal adds for <, > and &), and is bounded at that before it is decoded.
	if len(c.Value) > 6*maxValueBytes {
		return fmt.Errorf("value over %d bytes", maxValueBytes)
	}
	text, ok := scalarText(decodeJSON(c.Value))
	if !ok {
		return fmt.Errorf("value %s must be a string, a number or a boolean", c.Value)
	}
	if len(text) > maxValueBytes {
		return fmt.Errorf("value over %d bytes", maxValueBytes)
	}
	c.text = text
	if c.Op == OpMatches || c.Op == OpNotMatches {
		if len(text) > maxPatternBytes {
			return fmt.Errorf("pattern over %d bytes", maxPatternBytes)
		}
		re, err := regexp.Compile(text) // RE2: linear in the input, whatever the pattern
		if err != nil {
			return fmt.Errorf("pattern %q: %w", text, err)
		}
		c.re = re
	}
	return nil
}

// passesNames applies the event-name lists, which need no decoding of the event.
func (f *Filter) passesNames(name string) bool {
	if len(f.EventNames) > 0 && !slices.Contains(f.EventNames, name) {
		return false
	}
	return !slices.Contains(f.ExcludeEventNames, name)
}

// passesConditions applies the conditions to the decoded event.
func (f *Filter) passesConditions(event any) bool {
	for i := range f.Conditions {
		if !f.Conditions[i].holds(event) {
			return false
		}
	}
	return true
}

func (c *Condition) holds(event any) bool {
	v, found := lookup(event, c.segments)
	switch c.Op {
	case OpExists:
		return found && v != nil
	case OpNotExists:
		return !found || v == nil
	case OpIsEmpty:
		return isEmpty(v, found)
	case OpIsNot, OpNotContains, OpNotMatches:
		return !c.positive(v, found)
	default:
		return c.positive(v, found)
	}
}

// positive is the test of the op without its "not": a missing value never passes it.
func (c *Condition) positive(v any, found bool) bool {
	if !found || v == nil {
		return false
	}
	if list, ok := v.([]any); ok && (c.Op == OpContains || c.Op == OpNotContains) {
		for _, e := range list {
			if text, ok := scalarText(e); ok && text == c.text {
				return true
			}
		}
		return false
	}
	text, ok := scalarText(v)
	if !ok {
		return false
	}
	switch c.Op {
	case OpIs, OpIsNot:
		return text == c.text
	case OpContains, OpNotContains:
		return strings.Contains(text, c.text)
	case OpStartsWith:
		return strings.HasPrefix(text, c.text)
	case OpEndsWith:
		return strings.HasSuffix(text, c.text)
	case OpMatches, OpNotMatches:
		return c.re.MatchString(text)
	}
	return false
}

// lookup follows a JSON pointer's segments through decoded JSON.
func lookup(v any, segments []string) (any, bool) {
	for _, s := range segments {
		switch node := v.(type) {
		case map[string]any:
			next, ok := node[s]
			if !ok {
				return nil, false
			}
			v = next
		case []any:
			var i int
			if _, err := fmt.Sscanf(s, "%d", &i); err != nil || i < 0 || i >= len(node) || fmt.Sprint(i) != s {
				return nil, false
			}
			v = node[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func isEmpty(v any, found bool) bool {
	if !found || v == nil {
		return true
	}
	switch x := v.(type) {
	case string:
		return x == ""
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

// scalarText is how values are compared: strings as they are, numbers as their JSON text,
// booleans as true/false.
func scalarText(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case bool:
		if x {
			return "true", true
		}
		return "false", true
	}
	return "", false
}

// hasConsent reports whether the event's user.consent_categories (strings or numbers, compared
// as strings) contain category. No categories means no consent.
func hasConsent(event any, category string) bool {
	v, _ := lookup(event, []string{"user", "consent_categories"})
	list, _ := v.([]any)
	for _, e := range list {
		if text, ok := scalarText(e); ok && text == category {
			return true
		}
	}
	return false
}

// decodeJSON decodes JSON keeping numbers' text; invalid JSON gives nil.
func decodeJSON(raw []byte) any {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return nil
	}
	return v
}

// Routing decides which stored events go to a destination: its sources, then its consent and
// condition filters. The delivery workers and the config API's view of outgoing payloads share
// it, so that the view shows what is really sent.
type Routing struct {
	consent string
	filter  *Filter
	sources map[int64]bool // empty: every source
}

// NewRouting compiles d's routing; it fails on a filter ParseFilter refuses.
func NewRouting(d trackapi.Destination) (*Routing, error) {
	filter, err := ParseFilter(d.Filter)
	if err != nil {
		return nil, err
	}
	r := &Routing{consent: d.ConsentCategory, filter: filter, sources: map[int64]bool{}}
	for _, id := range d.Sources {
		r.sources[id] = true
	}
	return r, nil
}

// Takes reports whether events of the source are the destination's at all (an event of another
// source is not counted as filtered: it was never the destination's).
func (r *Routing) Takes(sourceID int64) bool {
	return len(r.sources) == 0 || r.sources[sourceID]
}

// Admit applies the consent and condition filters: "" when the event goes out, else the outcome
// it is counted as (filtered_consent or filtered_condition).
func (r *Routing) Admit(ev trackapi.StoredEvent) string {
	needsBody := r.consent != "" || (r.filter != nil && len(r.filter.Conditions) > 0)
	var body any
	if needsBody {
		body = decodeJSON(ev.Event)
	}
	if r.consent != "" && !hasConsent(body, r.consent) {
		return outcomeFilteredConsent
	}
	if r.filter != nil && (!r.filter.passesNames(ev.EventName) || !r.filter.passesConditions(body)) {
		return outcomeFilteredCondition
	}
	return ""
}
