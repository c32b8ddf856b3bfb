package admin

import (
	"context"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen/adminapi"
)

// GetDeliveryStats sums a destination's per-minute counters over the period, in total and per
// bucket of the granularity asked (buckets without events are left out).
func (s *Server) GetDeliveryStats(ctx context.Context, req adminapi.GetDeliveryStatsRequestObject) (adminapi.GetDeliveryStatsResponseObject, error) {
	start, end, err := period(req.Params.Start, req.Params.End, s.now())
	if err != nil {
		return nil, err
	}
	if _, err := s.cfg.Store.Destination(ctx, req.DestinationId); err != nil {
		return nil, err
	}
	granularity := adminapi.DeliveryStatsGranularityHour
	if req.Params.Granularity != nil {
		granularity = adminapi.DeliveryStatsGranularity(*req.Params.Granularity)
	}
	minutes, err := s.cfg.Store.DeliveryStats(ctx, req.DestinationId, start, end)
	if err != nil {
		return nil, err
	}
	state, err := s.cfg.Store.DeliveryState(ctx, req.DestinationId)
	if err != nil {
		return nil, err
	}
	var total trackapi.DeliveryCounts
	var buckets []adminapi.DeliveryBucket
	var bucket trackapi.DeliveryCounts
	var bucketStart time.Time
	flush := func() {
		if !bucketStart.IsZero() {
			buckets = append(buckets, adminapi.DeliveryBucket{Start: bucketStart, Counts: countsOut(bucket)})
		}
	}
	for _, m := range minutes { // oldest first
		b := bucketOf(m.Minute, granularity)
		if !b.Equal(bucketStart) {
			flush()
			bucketStart, bucket = b, trackapi.DeliveryCounts{}
		}
		addCounts(&bucket, m.DeliveryCounts)
		addCounts(&total, m.DeliveryCounts)
	}
	flush()
	if buckets == nil {
		buckets = []adminapi.DeliveryBucket{}
	}
	return adminapi.GetDeliveryStats200JSONResponse(adminapi.DeliveryStats{
		DestinationId: req.DestinationId, Start: start, End: end, Granularity: granularity,
		Total: countsOut(total), Buckets: buckets, State: s.stateOut(state),
	}), nil
}

// bucketOf is the start of the bucket a minute falls in, in UTC.
func bucketOf(minute time.Time, g adminapi.DeliveryStatsGranularity) time.Time {
	minute = minute.UTC()
	switch g {
	case adminapi.DeliveryStatsGranularityMinute:
		return minute.Truncate(time.Minute)
	case adminapi.DeliveryStatsGranularityDay:
		return time.Date(minute.Year(), minute.Month(), minute.Day(), 0, 0, 0, 0, time.UTC)
	}
	return minute.Truncate(time.Hour)
}

func addCounts(dst *trackapi.DeliveryCounts, c trackapi.DeliveryCounts) {
	dst.Delivered += c.Delivered
	dst.DeliveredAfterRetry += c.DeliveredAfterRetry
	dst.Retried += c.Retried
	dst.FilteredConsent += c.FilteredConsent
	dst.FilteredCondition += c.FilteredCondition
	dst.Rejected += c.Rejected
	dst.Failed += c.Failed
	dst.Expired += c.Expired
	dst.LatencyMillisSum += c.LatencyMillisSum
}

func countsOut(c trackapi.DeliveryCounts) adminapi.DeliveryCounts {
	out := adminapi.DeliveryCounts{Delivered: c.Delivered, DeliveredAfterRetry: c.DeliveredAfterRetry, Retried: c.Retried,
		FilteredConsent: c.FilteredConsent, FilteredCondition: c.FilteredCondition, Rejected: c.Rejected,
		Failed: c.Failed, Expired: c.Expired}
	if delivered := c.Delivered + c.DeliveredAfterRetry; delivered > 0 {
		avg := c.LatencyMillisSum / delivered
		out.LatencyAvgMs = &avg
	}
	return out
}

// ListDeliveryIssues lists a destination's issues, most recently seen first.
func (s *Server) ListDeliveryIssues(ctx context.Context, req adminapi.ListDeliveryIssuesRequestObject) (adminapi.ListDeliveryIssuesResponseObject, error) {
	if _, err := s.cfg.Store.Destination(ctx, req.DestinationId); err != nil {
		return nil, err
	}
	issues, err := s.cfg.Store.DeliveryIssues(ctx, req.DestinationId)
	if err != nil {
		return nil, err
	}
	out := adminapi.DeliveryIssueList{Items: []adminapi.DeliveryIssue{}}
	for _, is := range issues {
		if req.Params.Type != nil && is.Kind != string(*req.Params.Type) {
			continue
		}
		names := is.EventNames
		if names == nil {
			names = []string{}
		}
		out.Items = append(out.Items, adminapi.DeliveryIssue{Id: is.ID, Type: adminapi.DeliveryIssueType(is.Kind),
			Reason: is.Reason, Count: is.Count, EventNames: names, FirstSeen: is.FirstSeen.UTC(), LastSeen: is.LastSeen.UTC()})
	}
	return adminapi.ListDeliveryIssues200JSONResponse(out), nil
}

// ListIssueSamples lists the kept exchanges of one issue.
func (s *Server) ListIssueSamples(ctx context.Context, req adminapi.ListIssueSamplesRequestObject) (adminapi.ListIssueSamplesResponseObject, error) {
	if _, err := s.cfg.Store.Destination(ctx, req.DestinationId); err != nil {
		return nil, err
	}
	samples, err := s.cfg.Store.IssueSamples(ctx, req.DestinationId, req.IssueId)
	if err != nil {
		return nil, err
	}
	out := adminapi.IssueSampleList{Items: make([]adminapi.IssueSample, 0, len(samples))}
	for _, sm := range samples {
		item := adminapi.IssueSample{At: sm.At.UTC(), Seq: sm.Seq, Attempt: sm.Attempt,
			Request: sampleRequestOut(sm.Sample.Request), Response: sampleResponseOut(sm.Sample.Response)}
		if sm.Sample.Error != "" {
			item.Error = &sm.Sample.Error
		}
		out.Items = append(out.Items, item)
	}
	return adminapi.ListIssueSamples200JSONResponse(out), nil
}

// ListDeadLetters pages through a destination's dead letters by seq.
func (s *Server) ListDeadLetters(ctx context.Context, req adminapi.ListDeadLettersRequestObject) (adminapi.ListDeadLettersResponseObject, error) {
	after, err := parseCursor(req.Params.After)
	if err != nil {
		return nil, err
	}
	filter, err := deadLetterFilter(req.Params.Reason, req.Params.Since, req.Params.Until, nil)
	if err != nil {
		return nil, err
	}
	if _, err := s.cfg.Store.Destination(ctx, req.DestinationId); err != nil {
		return nil, err
	}
	limit := pageLimit(req.Params.Limit)
	// One more than a page, to tell whether another follows: a page with a next is not the last
	// (admin.yaml), so a page that ends the list must have none, also when it is full.
	list, _, err := s.cfg.Store.DeadLetters(ctx, req.DestinationId, filter, after, limit+1)
	if err != nil {
		return nil, err
	}
	page := adminapi.DeadLetterPage{}
	if len(list) > limit {
		list = list[:limit]
		page.Next = formatCursor(list[limit-1].Seq)
	}
	page.Items = make([]adminapi.DeadLetter, 0, len(list))
	for _, d := range list {
		page.Items = append(page.Items, adminapi.DeadLetter{Seq: d.Seq, EventName: d.EventName, Kind: adminapi.DeadLetterKind(d.Kind),
			Reason: d.Reason, Error: d.Error, Attempts: d.Attempts, FirstFailedAt: d.FirstFailedAt.UTC(), FailedAt: d.FailedAt.UTC()})
	}
	return adminapi.ListDeadLetters200JSONResponse(page), nil
}

// ReplayDeadLetters queues dead letters for delivery again.
func (s *Server) ReplayDeadLetters(ctx context.Context, req adminapi.ReplayDeadLettersRequestObject) (adminapi.ReplayDeadLettersResponseObject, error) {
	var sel adminapi.DeadLetterSelection
	if req.Body != nil {
		sel = *req.Body
	}
	filter, err := deadLetterFilter(sel.Reason, sel.Since, sel.Until, sel.Seqs)
	if err != nil {
		return nil, err
	}
	if _, err := s.cfg.Store.Destination(ctx, req.DestinationId); err != nil {
		return nil, err
	}
	n, err := s.cfg.Store.ReplayDeadLetters(ctx, req.DestinationId, filter, s.now())
	if err != nil {
		return nil, err
	}
	return adminapi.ReplayDeadLetters200JSONResponse(adminapi.Count{Count: int64(n)}), nil
}

// PurgeDeadLetters deletes dead letters without sending them.
func (s *Server) PurgeDeadLetters(ctx context.Context, req adminapi.PurgeDeadLettersRequestObject) (adminapi.PurgeDeadLettersResponseObject, error) {
	filter, err := deadLetterFilter(req.Params.Reason, req.Params.Since, req.Params.Until, nil)
	if err != nil {
		return nil, err
	}
	if _, err := s.cfg.Store.Destination(ctx, req.DestinationId); err != nil {
		return nil, err
	}
	n, err := s.cfg.Store.PurgeDeadLetters(ctx, req.DestinationId, filter)
	if err != nil {
		return nil, err
	}
	return adminapi.PurgeDeadLetters200JSONResponse(adminapi.Count{Count: int64(n)}), nil
}

// deadLetterFilter builds the store's filter from the API's.
func deadLetterFilter(reason *string, since, until *time.Time, seqs *[]int64) (trackapi.DeadLetterFilter, error) {
	s, u, err := sinceUntil(since, until)
	if err != nil {
		return trackapi.DeadLetterFilter{}, err
	}
	f := trackapi.DeadLetterFilter{Since: s, Until: u}
	if reason != nil {
		f.Reason = *reason
	}
	if seqs != nil {
		f.Seqs = *seqs
		if len(f.Seqs) == 0 {
			return f, badRequest("seqs: give at least one seq, or leave the field out to select all")
		}
	}
	return f, nil
}
