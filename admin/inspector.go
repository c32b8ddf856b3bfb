package admin

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen/adminapi"
	"github.com/trackapi/trackapi/sources"
)

// authReasons are the reasons of an invalid_source. The code filter matches them too
// (admin.yaml's InspectorCode: "key_expired" finds the entries rejected for an expired key), but
// the store indexes codes only: a reason is asked of the store as invalid_source, and the
// entries it returns are then kept by their reason.
var authReasons = map[string]bool{
	string(sources.ReasonMissing): true, string(sources.ReasonUnknownKey): true, string(sources.ReasonKeyExpired): true,
	string(sources.ReasonKeyRevoked): true, string(sources.ReasonSourceInactive): true, string(sources.ReasonSiteMismatch): true,
}

// entryFilter is a filter of inspector entries: what the store applies, and the reason of an
// invalid_source, which it cannot.
type entryFilter struct {
	trackapi.InspectorFilter
	reason string
}

// matches applies what the store does not.
func (f entryFilter) matches(e trackapi.InspectorEntry) bool {
	return f.reason == "" || e.Reason == f.reason
}

// inspectorFilter builds the filter from the API's parameters. source_id 0 asks for the entries
// no source could be attributed to (an unknown key).
func inspectorFilter(sourceID *int64, site, eventName *string, outcome *adminapi.InspectorOutcome, code, testCode *string) entryFilter {
	var f trackapi.InspectorFilter
	if sourceID != nil {
		f.SourceID = *sourceID
		f.Unattributed = *sourceID == 0
	}
	deref := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	f.Site, f.EventName, f.Code, f.TestCode = deref(site), deref(eventName), deref(code), deref(testCode)
	if outcome != nil {
		f.Outcome = string(*outcome)
	}
	var reason string
	if authReasons[f.Code] {
		reason, f.Code = f.Code, "invalid_source"
	}
	return entryFilter{InspectorFilter: f, reason: reason}
}

// ListInspectorEvents pages through the inspector's entries, newest first.
func (s *Server) ListInspectorEvents(ctx context.Context, req adminapi.ListInspectorEventsRequestObject) (adminapi.ListInspectorEventsResponseObject, error) {
	p := req.Params
	before, err := parseCursor(p.After)
	if err != nil {
		return nil, err
	}
	since, until, err := sinceUntil(p.Since, p.Until)
	if err != nil {
		return nil, err
	}
	f := inspectorFilter(p.SourceId, p.Site, p.EventName, p.Outcome, p.Code, p.TestCode)
	f.Since, f.Until = since, until
	entries, next, err := s.listEntries(ctx, f, before, pageLimit(p.Limit))
	if err != nil {
		return nil, err
	}
	page := adminapi.InspectorPage{Items: make([]adminapi.InspectorSummary, 0, len(entries))}
	for _, e := range entries {
		page.Items = append(page.Items, summaryOut(e))
	}
	if next > 0 {
		page.Next = formatCursor(next)
	}
	return adminapi.ListInspectorEvents200JSONResponse(page), nil
}

// listEntries lists up to limit entries matching f with an ID below before (0: from the newest),
// newest first, and the cursor of the next page (0: no more). Without a reason it is the store's
// page; with one, the store's pages are read until limit entries have the reason and one more
// does, or none are left.
func (s *Server) listEntries(ctx context.Context, f entryFilter, before int64, limit int) ([]trackapi.InspectorEntry, int64, error) {
	if f.reason == "" {
		return s.cfg.Inspector.InspectorEntries(ctx, f.InspectorFilter, before, limit)
	}
	var kept []trackapi.InspectorEntry
	for {
		page, next, err := s.cfg.Inspector.InspectorEntries(ctx, f.InspectorFilter, before, limit)
		if err != nil {
			return nil, 0, err
		}
		for _, e := range page {
			if !f.matches(e) {
				continue
			}
			if len(kept) == limit {
				return kept, kept[limit-1].ID, nil
			}
			kept = append(kept, e)
		}
		if next == 0 || len(page) == 0 {
			return kept, 0, nil
		}
		before = next
	}
}

// GetInspectorEvent returns one entry with its body.
func (s *Server) GetInspectorEvent(ctx context.Context, req adminapi.GetInspectorEventRequestObject) (adminapi.GetInspectorEventResponseObject, error) {
	e, err := s.cfg.Inspector.InspectorEntry(ctx, req.EntryId)
	if err != nil {
		return nil, err
	}
	return adminapi.GetInspectorEvent200JSONResponse(entryOut(e)), nil
}

// summaryOut is an entry as lists show it, without its body.
func summaryOut(e trackapi.InspectorEntry) adminapi.InspectorSummary {
	opt := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	out := adminapi.InspectorSummary{Id: e.ID, At: e.At.UTC(), SourceId: e.SourceID, Site: e.Site,
		KeyPrefix: opt(e.KeyPrefix), EventName: opt(e.EventName), EventId: opt(e.EventID),
		Outcome: adminapi.InspectorOutcome(e.Outcome), Codes: e.Codes, Reason: opt(e.Reason), TestCode: opt(e.TestCode),
		ClientIp: opt(e.ClientIP), Problems: make([]adminapi.Problem, 0, len(e.Problems))}
	if out.Codes == nil {
		out.Codes = []string{}
	}
	if e.Batch {
		i := e.Index
		out.BatchIndex = &i
	}
	for _, p := range e.Problems {
		out.Problems = append(out.Problems, adminapi.Problem{Code: p.Code, Path: p.Path, Message: p.Message})
	}
	return out
}

// entryOut is an entry with its body, kept as the raw JSON stored (no float rounding of large
// numbers, keys in the sender's order).
func entryOut(e trackapi.InspectorEntry) adminapi.InspectorEntry {
	s := summaryOut(e)
	out := adminapi.InspectorEntry{Id: s.Id, At: s.At, SourceId: s.SourceId, Site: s.Site, KeyPrefix: s.KeyPrefix,
		EventName: s.EventName, EventId: s.EventId, Outcome: s.Outcome, Codes: s.Codes, Reason: s.Reason,
		TestCode: s.TestCode, ClientIp: s.ClientIp, BatchIndex: s.BatchIndex, Problems: s.Problems}
	if len(e.Body) > 0 && json.Valid(e.Body) {
		out.Body = e.Body
	}
	return out
}

// maxAnomalies is how many anomalies of an event name a data-quality report shows.
const maxAnomalies = 10

// rejectionCodes are the codes of events that were not stored; every other anomaly is a warning.
var rejectionCodes = map[string]bool{"invalid_source": true, "missing_event_name": true, "event_too_large": true,
	"invalid_payload": true, "invalid_json": true, "payload_too_large": true}

// GetSourceDataQuality sums a source's hourly data-quality counts over the period, per event
// name, with its most frequent anomalies.
func (s *Server) GetSourceDataQuality(ctx context.Context, req adminapi.GetSourceDataQualityRequestObject) (adminapi.GetSourceDataQualityResponseObject, error) {
	start, end, err := period(req.Params.Start, req.Params.End, s.now())
	if err != nil {
		return nil, err
	}
	if _, err := s.cfg.Sources.Source(ctx, req.SourceId); err != nil {
		return nil, err
	}
	report, err := s.cfg.Inspector.DataQuality(ctx, req.SourceId, start, end)
	if err != nil {
		return nil, err
	}
	byName := map[string]*adminapi.EventNameQuality{}
	var names []string
	get := func(name string) *adminapi.EventNameQuality {
		q := byName[name]
		if q == nil {
			q = &adminapi.EventNameQuality{EventName: name, Anomalies: []adminapi.Anomaly{}}
			byName[name] = q
			names = append(names, name)
		}
		return q
	}
	for _, e := range report.Events {
		q := get(e.EventName)
		q.Collected += e.Collected
		q.WithWarnings += e.WithWarnings
		q.Rejected += e.Rejected
		q.Duplicates += e.Duplicates
	}
	type anomalyKey struct{ name, code, path string }
	anomalies := map[anomalyKey]*adminapi.Anomaly{}
	for _, a := range report.Anomalies {
		k := anomalyKey{a.EventName, a.Code, a.Path}
		out := anomalies[k]
		if out == nil {
			level := adminapi.AnomalyLevelWarning
			if rejectionCodes[a.Code] {
				level = adminapi.AnomalyLevelError
			}
			out = &adminapi.Anomaly{Code: a.Code, Path: a.Path, Level: level}
			anomalies[k] = out
		}
		out.Count += a.Count
		if !a.Hour.Before(out.LastSeen) { // the newest hour's message and sample
			out.LastSeen, out.Message = a.Hour.UTC(), a.Message
			if len(a.Sample) > 0 && json.Valid(a.Sample) {
				out.Sample = json.RawMessage(a.Sample)
			}
		}
	}
	for k, a := range anomalies {
		q := get(k.name)
		q.Anomalies = append(q.Anomalies, *a)
	}
	sort.Strings(names)
	out := adminapi.DataQuality{SourceId: req.SourceId, Start: start, End: end, EventNames: make([]adminapi.EventNameQuality, 0, len(names))}
	for _, name := range names {
		q := byName[name]
		sort.Slice(q.Anomalies, func(i, j int) bool {
			a, b := q.Anomalies[i], q.Anomalies[j]
			if a.Count != b.Count {
				return a.Count > b.Count
			}
			return a.Code+a.Path < b.Code+b.Path
		})
		if len(q.Anomalies) > maxAnomalies {
			q.Anomalies = q.Anomalies[:maxAnomalies]
		}
		out.EventNames = append(out.EventNames, *q)
	}
	return adminapi.GetSourceDataQuality200JSONResponse(out), nil
}
