package inspector_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/ingest"
	"github.com/trackapi/trackapi/inspector"
)

// BenchmarkInspect is the capturer's own cost on the collect path, for one request of one event
// and of a batch of 100 (valid, or each with two warnings), from a flood of one event name: what
// Inspect adds to Collect, without the store's time around it (ingest's BenchmarkInspector* and
// BenchmarkInspectorPaired measure it within Collect over the real store). The writer does not
// run: the queue fills once and then drops, as sampling keeps few entries anyway.
func BenchmarkInspect(b *testing.B) {
	warnings := []trackapi.Problem{
		{Code: "timestamp_generated", Path: "/context/event_timestamp", Message: "context.event_timestamp was missing; the receive time was used"},
		{Code: "schema_violation", Path: "", Message: `property "user" is missing`},
	}
	body := []byte(`{"event_name":"page_view","page_type":"product","context":{"event_id":"0000000000000001-0000001","device":{"ip":"198.51.100.23"}},"note":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)
	for _, shape := range []struct {
		name   string
		events int
		warned bool
	}{{"Single", 1, false}, {"Batch100", 100, false}, {"Batch100Warned", 100, true}} {
		b.Run(shape.name, func(b *testing.B) {
			db := openDB(b)
			c, err := inspector.New(inspector.Config{Store: db, Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			in := &ingest.Inspection{At: time.Now(), Batch: shape.events > 1, SourceID: 1, Site: "29", KeyPrefix: "abcd1234", ClientIP: "203.0.113.7"}
			for i := range shape.events {
				ev := ingest.InspectedEvent{Outcome: trackapi.InspectorAccepted, EventName: "page_view", EventID: fmt.Sprint(i), Body: body}
				if shape.warned {
					ev.Outcome, ev.Problems = trackapi.InspectorWarned, warnings
				}
				in.Events = append(in.Events, ev)
			}
			b.ReportAllocs()
			for b.Loop() {
				c.Inspect(in)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*shape.events), "ns/event")
		})
	}
}
