package ingest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// sampleEvent is a realistic event of about size bytes: a purchase with every property the
// standard event requires, plus custom properties.
func sampleEvent(id string, size int) []byte {
	head := fmt.Sprintf(`{"event_name":"purchase","id":"o-1","type":"online","value":12.5,"revenue":10,"currency":"EUR",`+
		`"payment_method":"card","status":"in_progress",`+
		`"items":[{"id":"i1","quantity":1,"product":{"id":"p1","name":"Shirt","price":10}}],`+
		`"user":{"consistent_anonymous_id":"a1","consent_categories":["1","3"]},`+
		`"context":{"event_id":%q,"event_timestamp":1639044446636,"page":{"url":"https://shop.example/p/1","title":"Shirt"}},"note":"`, id)
	pad := size - len(head) - 2
	if pad < 0 {
		pad = 0
	}
	return []byte(head + strings.Repeat("n", pad) + `"}`)
}

func BenchmarkProcessEvent(b *testing.B) {
	p, err := newEventProcessor()
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{330, 1024} {
		raw := sampleEvent("bench-1", size)
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			now := time.Now()
			for b.Loop() {
				if out := p.process(raw, true, now); out.rejected != nil || len(out.warnings) != 0 {
					b.Fatalf("%+v", out)
				}
			}
		})
	}
}

// sampleLegacyEvent is sampleEvent in the v1 shape: its data in properties, its envelope at the
// root.
func sampleLegacyEvent(id string, size int) []byte {
	head := fmt.Sprintf(`{"event_name":"purchase","event_id":%q,"event_timestamp":1639044446636,"page":{"url":"https://shop.example/p/1","title":"Shirt"},`+
		`"properties":{"id":"o-1","type":"online","value":12.5,"revenue":10,"currency":"EUR","payment_method":"card","status":"in_progress",`+
		`"items":[{"id":"i1","quantity":1,"product":{"id":"p1","name":"Shirt","price":10}}],`+
		`"user":{"consistent_anonymous_id":"a1","consent_categories":["1","3"]},"note":"`, id)
	pad := size - len(head) - 3
	if pad < 0 {
		pad = 0
	}
	return []byte(head + strings.Repeat("n", pad) + `"}}`)
}

// BenchmarkProcessLegacyEvent is what a v1 event costs, converted (BenchmarkProcessEvent is the
// same event in v2).
func BenchmarkProcessLegacyEvent(b *testing.B) {
	p, err := newEventProcessor()
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{330, 1024} {
		raw := sampleLegacyEvent("bench-1", size)
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			now := time.Now()
			for b.Loop() {
				if out := p.process(raw, true, now); out.rejected != nil || len(out.warnings) != 1 || out.warnings[0].Code != "legacy_format_converted" {
					b.Fatalf("%+v", out)
				}
			}
		})
	}
}

// BenchmarkV2EventChecks is what the legacy detection and the standard event check add to a v2
// event's processing (BenchmarkProcessEvent), on its members and decoded context.
func BenchmarkV2EventChecks(b *testing.B) {
	p, err := newEventProcessor()
	if err != nil {
		b.Fatal(err)
	}
	raw := sampleEvent("bench-1", 1024)
	members, _ := objectMembers(raw)
	event, _, _ := p.decodeKnown(members)
	context, _ := event["context"].(map[string]any)
	b.ReportAllocs()
	for b.Loop() {
		if legacyRoot(members) || legacyContext(context) || p.standard.missingRequired(nil, "purchase", members) != nil {
			b.Fatal("a v2 purchase with every required property")
		}
	}
}
