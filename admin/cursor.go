package admin

import (
	"strconv"
	"time"
)

// Paging: a cursor is the id (or seq) of the last item of a page, as a decimal string. The spec
// calls it opaque and holds it to ^[0-9]{1,19}$, so the validator refuses most bad cursors; the
// parser refuses the rest (a value past int64).
const (
	defaultPageLimit = 100
	maxPageLimit     = 1000
)

// parseCursor reads an `after` parameter; nil or empty is the start.
func parseCursor(after *string) (int64, error) {
	if after == nil || *after == "" {
		return 0, nil
	}
	n, ok := parseID(*after)
	if !ok {
		return 0, badRequest("after: %q is not a cursor this API gave (pass the `next` of the previous page)", *after)
	}
	return n, nil
}

// parseID reads an id as this API writes it: decimal digits only, within int64. strconv.ParseInt
// alone would also take a sign ("+5", "-0").
func parseID(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// formatCursor is the `next` of a page whose last item has id.
func formatCursor(id int64) *string {
	s := strconv.FormatInt(id, 10)
	return &s
}

// pageLimit reads a `limit` parameter within its bounds (the validator has checked them; this
// keeps a handler safe without it).
func pageLimit(limit *int) int {
	if limit == nil || *limit <= 0 {
		return defaultPageLimit
	}
	return min(*limit, maxPageLimit)
}

// defaultPeriod is the period of a report when its start is not given.
const defaultPeriod = 24 * time.Hour

// period reads `start` and `end`: by default the 24 hours before now. An end not after its start
// is a 400 naming both.
func period(start, end *time.Time, now time.Time) (time.Time, time.Time, error) {
	e := now
	if end != nil {
		e = *end
	}
	st := e.Add(-defaultPeriod)
	if start != nil {
		st = *start
	}
	if !e.After(st) {
		return time.Time{}, time.Time{}, badRequest("end (%s) must be after start (%s)", e.UTC().Format(time.RFC3339), st.UTC().Format(time.RFC3339))
	}
	return st.UTC(), e.UTC(), nil
}

// sinceUntil reads `since` and `until`, both optional; until not after since is a 400.
func sinceUntil(since, until *time.Time) (time.Time, time.Time, error) {
	var s, u time.Time
	if since != nil {
		s = since.UTC()
	}
	if until != nil {
		u = until.UTC()
	}
	if !s.IsZero() && !u.IsZero() && !u.After(s) {
		return time.Time{}, time.Time{}, badRequest("until (%s) must be after since (%s)", u.Format(time.RFC3339), s.Format(time.RFC3339))
	}
	return s, u, nil
}
