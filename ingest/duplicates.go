package ingest

import (
	"fmt"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
)

// One rule for a key repeated in an object, everywhere the server reads one: the last one wins, as
// in encoding/json (and so in the decoder that validates and normalises an event). The stored
// event must say the same to every reader, also to those that keep the first of repeated keys or
// refuse them, so the earlier repeats at the event's root and in its context are dropped from the
// stored body, with a duplicate_key warning.

// smallObject is the number of members up to which repeated keys are found by comparing every pair
// (no allocation, faster than a map for the dozen members of a usual event); larger objects use a
// map, so that a hostile event of thousands of members costs linear time.
const smallObject = 32

// maxDuplicateWarnings caps the duplicate_key warnings of one event, as maxSchemaWarnings does
// for schema violations; the rest are counted in one more warning.
const maxDuplicateWarnings = 10

// supersededMembers reports, for each member, whether a later member has the same (decoded) key.
// It returns nil, without allocating, when no key repeats: the usual case.
func supersededMembers(members []member) []bool {
	var dropped []bool
	if len(members) <= smallObject {
		for i := range members {
			for j := i + 1; j < len(members); j++ {
				if members[i].key == members[j].key {
					if dropped == nil {
						dropped = make([]bool, len(members))
					}
					dropped[i] = true
					break
				}
			}
		}
		return dropped
	}
	last := make(map[string]int, len(members))
	for i, m := range members {
		last[m.key] = i
	}
	if len(last) == len(members) {
		return nil
	}
	dropped = make([]bool, len(members))
	for i, m := range members {
		dropped[i] = last[m.key] != i
	}
	return dropped
}

// duplicateReport collects the repeated keys of an event's objects for its warnings: each key once,
// in the order first sent, the first maxDuplicateWarnings of them listed.
type duplicateReport struct {
	listed   []trackapi.Problem
	unlisted int
}

// add records the keys of members (an object at the JSON pointer prefix) that dropped, from
// supersededMembers, marks as repeated.
func (r *duplicateReport) add(prefix string, members []member, dropped []bool) {
	if dropped == nil {
		return
	}
	seen := make(map[string]bool)
	for i, m := range members {
		if !dropped[i] || seen[m.key] {
			continue
		}
		seen[m.key] = true
		if len(r.listed) == maxDuplicateWarnings {
			r.unlisted++
			continue
		}
		r.listed = append(r.listed, trackapi.Problem{
			Code: string(gen.DuplicateKey),
			Path: prefix + jsonPointer([]string{m.key}),
			Message: fmt.Sprintf("the key %s is repeated in the same object; the last one was used and stored, the earlier ones were dropped",
				clip(string(m.rawKey), maxValueInMessage)),
		})
	}
}

// warnings appends the report's warnings to dst.
func (r *duplicateReport) warnings(dst []trackapi.Problem) []trackapi.Problem {
	dst = append(dst, r.listed...)
	if r.unlisted > 0 {
		dst = append(dst, trackapi.Problem{
			Code: string(gen.DuplicateKey), Path: "",
			Message: fmt.Sprintf("%d more repeated keys not listed", r.unlisted),
		})
	}
	return dst
}
