package metrics_test

import (
	"testing"

	"github.com/trackapi/trackapi/metrics"
)

// A duplicate whose event id was already stored for a different event is counted with the code
// event_id_reused; the other duplicates keep the code "".
func TestDuplicatesWithReusedIDs(t *testing.T) {
	m := metrics.New()
	m.ObserveRequest(metrics.Request{Endpoint: "single", Status: 200, Outcome: "ok", Duplicates: 3, IDReused: 1})
	m.ObserveRequest(metrics.Request{Endpoint: "single", Status: 200, Outcome: "ok", Duplicates: 2})
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "trackapi_events_total" {
			continue
		}
		for _, metric := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range metric.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			got[labels["outcome"]+"/"+labels["code"]] = metric.GetCounter().GetValue()
		}
	}
	if len(got) != 2 || got["duplicate/"] != 4 || got["duplicate/event_id_reused"] != 1 {
		t.Fatalf("trackapi_events_total: %v", got)
	}
}
