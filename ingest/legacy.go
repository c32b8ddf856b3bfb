package ingest

import (
	"slices"
	"strconv"
	"strings"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
)

// Legacy payloads are converted to v2 before anything else reads the event, so that the
// event_name, id and timestamp that are normalised, checked and deduplicated on are the converted
// ones. Each converted event gets one legacy_format_converted warning saying what moved. The
// shapes, from the vendor's documentation before v2:
//
//   - v1: the event's data in a root `properties` object, the envelope (`event_id`,
//     `event_timestamp`, `page`, `device`, `app`) at the root. `properties`' members move to the
//     root (where it was), the envelope into `context`, and v1's `page.location` becomes
//     `page.url`.
//   - 2021: `{"event": "name", "properties": {...}}`: `event` is the name.
//   - camelCase: `eventId` and `eventTimestamp` at the root or in `context`, `device.userAgent`.
//
// An event is legacy when its root has a `properties` object, or `eventId` or `eventTimestamp`,
// or a string `event` and no `event_name` (the envelope is then at its root), or when its context
// has `eventId`, `eventTimestamp` or `device.userAgent`. So a v2 event may not use `properties`
// (an object) as a custom root property.
//
// When a value is sent in both forms, the v2 one wins and the legacy one is dropped (the warning
// names it): a root property over the same one in `properties`, `event_name` over `event`, and in
// context `event_id` over `eventId` over a root `event_id` over a root `eventId` (what is already
// in context first, then snake_case first), `user_agent` over `userAgent`, `url` over `location`;
// a root `page`, `device` or `app` is dropped when context has one. Of a repeated `properties`
// the last one is used (duplicate_key). When context is sent but is not an object, the envelope
// stays at the root. Values are moved as sent, byte for byte.

// legacyRoot tells whether an event's root members (as sent) mark a legacy shape; legacyContext
// whether its decoded context (nil when it is not an object) does. For a v2 event they cost a
// pass over the root keys and three map lookups.
func legacyRoot(members []member) bool {
	var properties, event []byte
	named := false
	for i := range members {
		switch members[i].key {
		case "properties":
			properties = members[i].value
		case "event":
			event = members[i].value
		case "event_name":
			named = true
		case "eventId", "eventTimestamp":
			return true
		}
	}
	return len(properties) > 0 && properties[0] == '{' || !named && len(event) > 0 && event[0] == '"'
}

func legacyContext(context map[string]any) bool {
	if context == nil {
		return false
	}
	_, id := context["eventId"]
	_, ts := context["eventTimestamp"]
	device, _ := context["device"].(map[string]any)
	_, ua := device["userAgent"]
	return id || ts || ua
}

// envelopeTargets maps the root keys of a legacy envelope to where they go in context; for each
// target the snake_case key is preferred over the camelCase one.
var envelopeTargets = map[string]string{
	"event_id": "event_id", "eventId": "event_id",
	"event_timestamp": "event_timestamp", "eventTimestamp": "event_timestamp",
	"page": "page", "device": "device", "app": "app",
}

// camelOf maps a target in context to its camelCase form.
var camelOf = map[string]string{"event_id": "eventId", "event_timestamp": "eventTimestamp"}

// convertLegacy rewrites the event whose root members (as sent) are members into the v2 shape,
// and returns it with its warnings: legacy_format_converted, and duplicate_key for the earlier
// of repeated `properties`.
func convertLegacy(members []member) ([]byte, []trackapi.Problem) {
	var notes legacyNotes
	propsAt, eventAt, named, camelRoot := -1, -1, false, false
	for i, m := range members {
		switch m.key {
		case "properties":
			propsAt = i
		case "event":
			eventAt = i
		case "event_name":
			named = true
		case "eventId", "eventTimestamp":
			camelRoot = true
		}
	}
	if propsAt >= 0 && members[propsAt].value[0] != '{' {
		propsAt = -1
	}
	if eventAt >= 0 && members[eventAt].value[0] != '"' {
		eventAt = -1
	}
	envelope := propsAt >= 0 || camelRoot || eventAt >= 0 && !named
	switch {
	case envelope && eventAt >= 0:
		notes.shape("2021 event/properties")
	case propsAt >= 0:
		notes.shape("v1")
	}
	if camelRoot {
		notes.shape("camelCase")
	}

	// properties' members take its place at the root.
	var duplicates duplicateReport
	root := make([]member, 0, len(members)+8)
	if propsAt >= 0 {
		notes.step("properties moved to the root")
		atRoot := make(map[string]bool, len(members))
		for _, m := range members {
			atRoot[m.key] = true
		}
		var earlier []bool // earlier repeats of properties
		for i, m := range members {
			switch {
			case m.key != "properties":
				root = append(root, m)
			case i != propsAt:
				if earlier == nil {
					earlier = make([]bool, len(members))
				}
				earlier[i] = true
			default:
				inner, _ := objectMembers(m.value)
				for _, p := range inner {
					if atRoot[p.key] { // the root's wins; properties.properties has nowhere to go
						notes.drop("properties." + p.key)
						continue
					}
					root = append(root, p)
				}
			}
		}
		duplicates.add("", members, earlier)
	} else {
		root = append(root, members...)
	}

	// A root string event is the 2021 name.
	if envelope && eventAt >= 0 {
		hasName := slices.ContainsFunc(root, func(m member) bool { return m.key == "event_name" })
		if hasName {
			notes.drop("event")
		} else {
			notes.step("event renamed event_name")
		}
		root = slices.DeleteFunc(root, func(m member) bool { return hasName && m.key == "event" })
		for i := range root {
			if root[i].key == "event" {
				root[i] = member{rawKey: quotedKey("event_name"), key: "event_name", value: root[i].value}
			}
		}
	}

	// The envelope moves into context, and camelCase keys there become snake_case.
	contextAt := -1
	for i, m := range root {
		if m.key == "context" {
			contextAt = i
		}
	}
	var context []member
	switch {
	case contextAt < 0 || string(root[contextAt].value) == "null":
	case root[contextAt].value[0] == '{':
		context, _ = objectMembers(root[contextAt].value)
	default: // not an object: nothing can be added to it
		if envelope && slices.ContainsFunc(root, func(m member) bool { return envelopeTargets[m.key] != "" }) {
			notes.step("context is not an object, so the envelope stayed at the root")
		}
		return notes.finish(root, duplicates)
	}
	changed := false
	for _, camel := range []string{"eventId", "eventTimestamp"} {
		var renamed bool
		if context, renamed = renameMember(context, camel, envelopeTargets[camel], "context.", &notes); renamed {
			notes.shape("camelCase")
			changed = true
		}
	}
	if envelope {
		winner := map[string]string{} // target -> the root key that moves there ("" : none)
		for _, m := range root {
			target := envelopeTargets[m.key]
			if target == "" || slices.ContainsFunc(context, func(c member) bool { return c.key == target }) {
				continue
			}
			if w, seen := winner[target]; !seen || w == camelOf[target] && m.key == target {
				winner[target] = m.key
			}
		}
		kept := root[:0]
		for _, m := range root {
			target := envelopeTargets[m.key]
			switch {
			case target == "":
				kept = append(kept, m)
			case winner[target] != m.key:
				notes.drop(m.key)
			default:
				if m.key != target {
					notes.moved(m.key + " as " + target)
					m = member{rawKey: quotedKey(target), key: target, value: m.value}
				} else {
					notes.moved(m.key)
				}
				if target == "page" {
					m.value, _ = renameInObject(m.value, "location", "url", "page.", &notes)
				}
				context = append(context, m)
				changed = true
			}
		}
		root = kept
	}
	for i := range context {
		if context[i].key == "device" {
			var renamed bool
			if context[i].value, renamed = renameInObject(context[i].value, "userAgent", "user_agent", "device.", &notes); renamed {
				notes.shape("camelCase")
				changed = true
			}
		}
	}
	if changed {
		value := rebuildObject(context, nil, "", nil, "")
		if contextAt >= 0 {
			for i := range root {
				if root[i].key == "context" {
					contextAt = i // the last one, in its place once the envelope left the root
				}
			}
			root[contextAt].value = value
		} else {
			root = append(root, member{rawKey: quotedKey("context"), key: "context", value: value})
		}
	}
	return notes.finish(root, duplicates)
}

// renameMember renames the members from of an object's members to, or drops them when to is
// there too; prefix names the object in the warning.
func renameMember(members []member, from, to, prefix string, notes *legacyNotes) (_ []member, changed bool) {
	hasFrom := slices.ContainsFunc(members, func(m member) bool { return m.key == from })
	if !hasFrom {
		return members, false
	}
	if slices.ContainsFunc(members, func(m member) bool { return m.key == to }) {
		notes.drop(prefix + from)
		return slices.DeleteFunc(members, func(m member) bool { return m.key == from }), true
	}
	notes.renamed(prefix + from + " to " + to)
	for i := range members {
		if members[i].key == from {
			members[i] = member{rawKey: quotedKey(to), key: to, value: members[i].value}
		}
	}
	return members, true
}

// renameInObject is renameMember on a JSON value, when it is an object.
func renameInObject(value []byte, from, to, prefix string, notes *legacyNotes) (_ []byte, changed bool) {
	members, ok := objectMembers(value)
	if !ok {
		return value, false
	}
	if members, changed = renameMember(members, from, to, prefix, notes); changed {
		return rebuildObject(members, nil, "", nil, ""), true
	}
	return value, false
}

func quotedKey(key string) []byte { return []byte(strconv.Quote(key)) }

// legacyNotes collects what a conversion did, for its warning.
type legacyNotes struct {
	shapes, steps, movedKeys, renames, dropped []string
	droppedMore                                int
}

// maxDroppedListed is the number of dropped properties a warning names; the rest are counted.
const maxDroppedListed = 2

func (n *legacyNotes) shape(s string) {
	if !slices.Contains(n.shapes, s) {
		n.shapes = append(n.shapes, s)
	}
}

func (n *legacyNotes) step(s string) { n.steps = append(n.steps, s) }

func (n *legacyNotes) moved(key string) {
	if !slices.Contains(n.movedKeys, key) {
		n.movedKeys = append(n.movedKeys, key)
	}
}

func (n *legacyNotes) renamed(s string) {
	if !slices.Contains(n.renames, s) {
		n.renames = append(n.renames, s)
	}
}

func (n *legacyNotes) drop(what string) {
	what = clip(what, maxValueInMessage)
	switch {
	case slices.Contains(n.dropped, what):
	case len(n.dropped) < maxDroppedListed:
		n.dropped = append(n.dropped, what)
	default:
		n.droppedMore++
	}
}

// finish writes the converted event and its warnings.
func (n *legacyNotes) finish(root []member, duplicates duplicateReport) ([]byte, []trackapi.Problem) {
	shapes := n.shapes
	if len(shapes) == 0 { // not expected: each legacy key names its shape
		shapes = []string{"legacy"}
	}
	steps := n.steps
	if len(n.movedKeys) > 0 {
		steps = append(steps, "moved into context: "+strings.Join(n.movedKeys, ", "))
	}
	if len(n.renames) > 0 {
		steps = append(steps, "renamed "+strings.Join(n.renames, ", "))
	}
	if len(n.dropped) > 0 {
		dropped := strings.Join(n.dropped, ", ")
		if n.droppedMore > 0 {
			dropped += " and " + strconv.Itoa(n.droppedMore) + " more"
		}
		steps = append(steps, "dropped for their v2 form, also sent: "+dropped)
	}
	message := "converted from the legacy " + strings.Join(shapes, ", ") + " format to v2: " + strings.Join(steps, "; ")
	warnings := []trackapi.Problem{{Code: string(gen.LegacyFormatConverted), Path: "", Message: clip(message, maxLegacyMessage)}}
	return rebuildObject(root, nil, "", nil, ""), duplicates.warnings(warnings)
}

// maxLegacyMessage bounds the legacy warning's message, which names keys that were sent.
const maxLegacyMessage = 280
