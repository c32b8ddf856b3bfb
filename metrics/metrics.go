// Package metrics holds trackapi's Prometheus metrics. They live on a registry of their own, made
// by New, rather than on the global default one, so that each server (and each test) counts for
// itself; the HTTP layer and the store's commit hook only call the Observe methods.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the collectors of one server.
type Metrics struct {
	registry *prometheus.Registry

	requests       *prometheus.CounterVec
	events         *prometheus.CounterVec
	requestSeconds *prometheus.HistogramVec
	bodyBytes      *prometheus.HistogramVec
	commitSeconds  *prometheus.HistogramVec
	groupRequests  prometheus.Histogram
	groupEvents    prometheus.Histogram
	auths          *prometheus.CounterVec
	authOK         prometheus.Counter // auths{result="ok"}, resolved once: it is counted on every request
	keyLookups     *prometheus.CounterVec

	deliveries    *prometheus.CounterVec
	lagEvents     *prometheus.GaugeVec
	lagSeconds    *prometheus.GaugeVec
	retryRows     *prometheus.GaugeVec
	circuitOpen   *prometheus.GaugeVec
	retentionGone *prometheus.CounterVec

	bodyBudgetHeld prometheus.Gauge
	connections    prometheus.Gauge
	connPressure   prometheus.Gauge

	inspectorDropped *prometheus.CounterVec
}

// New makes the collectors and registers them, with the Go runtime and process collectors, on a
// new registry.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackapi_requests_total",
			Help: "Collect requests by endpoint (single, batch, pixel) and outcome: ok (a 200), a 400 code, or unavailable (a 503).",
		}, []string{"endpoint", "outcome"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackapi_events_total",
			Help: "Events of 200 responses by endpoint and outcome (accepted, duplicate, rejected), with the rejection code, and code event_id_reused for a duplicate whose id was already stored for a different event.",
		}, []string{"endpoint", "outcome", "code"}),
		requestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "trackapi_request_duration_seconds",
			Help:    "Time from the start of a collect request's handler to its response, commit included.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5},
		}, []string{"endpoint", "status"}),
		bodyBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "trackapi_request_body_bytes",
			Help:    "Bytes of collect request bodies read (at most the limit plus one).",
			Buckets: prometheus.ExponentialBuckets(256, 4, 8), // 256 B … 4 MB
		}, []string{"endpoint"}),
		commitSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "trackapi_commit_duration_seconds",
			Help:    "Time of one store transaction (one sync), by result (ok, error).",
			Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1},
		}, []string{"result"}),
		groupRequests: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "trackapi_commit_group_requests",
			Help:    "Requests committed together in one transaction.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		groupEvents: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "trackapi_commit_group_events",
			Help:    "Events committed together in one transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9), // 1 … 65536
		}),
		auths: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackapi_source_authentications_total",
			Help: "Collect requests' credentials by result: ok, or why they were refused (unknown_key, key_expired, key_revoked, source_inactive, site_mismatch, missing_credentials).",
		}, []string{"result"}),
		keyLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackapi_source_key_lookups_total",
			Help: "Store lookups of keys missing from the in-memory copy, by whether the store knew them; unknown keys are then remembered briefly, so a flood of bad keys costs few lookups.",
		}, []string{"found"}),
	}
	m.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trackapi_delivery_events_total",
		Help: "Events settled for a destination, by outcome: delivered, delivered_after_retry, retried (a failed attempt that will be retried), rejected, failed (retry budget spent), expired (left the log by retention first), filtered_consent, filtered_condition.",
	}, []string{"destination", "outcome"})
	m.lagEvents = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trackapi_delivery_lag_events",
		Help: "Stored events a destination has not reached yet (after its cursor).",
	}, []string{"destination"})
	m.lagSeconds = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trackapi_delivery_lag_seconds",
		Help: "Age of the oldest stored event a destination has not reached yet; 0 when it is caught up.",
	}, []string{"destination"})
	m.retryRows = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trackapi_delivery_retry_queue",
		Help: "Events of a destination waiting in the retry table.",
	}, []string{"destination"})
	m.circuitOpen = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trackapi_delivery_circuit_open",
		Help: "1 while a destination's circuit is open (it failed every attempt lately; its cursor waits and the oldest retry probes), else 0.",
	}, []string{"destination"})
	m.retentionGone = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trackapi_retention_events_total",
		Help: "Events removed by retention: deleted (all of them), and expired (those a destination had not settled yet, counted once per such destination).",
	}, []string{"outcome"})
	m.bodyBudgetHeld = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "trackapi_request_body_budget_held_bytes",
		Help: "Bytes of the budget of request bodies in flight held now (a body holds what it has received, at most twice that).",
	})
	m.connections = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "trackapi_http_connections",
		Help: "Open client connections of the HTTP server.",
	})
	m.connPressure = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "trackapi_http_connection_pressure",
		Help: "1 while open connections are near the cap (idle ones are closed, keep-alives off), else 0.",
	})
	m.inspectorDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trackapi_inspector_dropped_total",
		Help: "Inspector entries dropped (the events themselves are stored): queue_full when the writer's queue had no room (the collect path never waits for it), store_failed when the store refused them.",
	}, []string{"reason"})
	m.authOK = m.auths.WithLabelValues("ok")
	m.registry.MustRegister(m.requests, m.events, m.requestSeconds, m.bodyBytes, m.commitSeconds,
		m.groupRequests, m.groupEvents, m.auths, m.keyLookups,
		m.deliveries, m.lagEvents, m.lagSeconds, m.retryRows, m.circuitOpen, m.retentionGone,
		m.bodyBudgetHeld, m.connections, m.connPressure, m.inspectorDropped,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// Registry is where the collectors are, for tests and for adding more.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Request is what the collect handlers know about one request once it is answered.
type Request struct {
	Endpoint  string // single, batch or pixel
	Status    int
	Outcome   string // ok, a 400 code, or unavailable
	BodyBytes int
	Took      time.Duration
	// For a 200: events by outcome.
	Accepted, Duplicates int
	Rejected             map[string]int // by rejection code
	// IDReused is how many of Duplicates repeated an event id already stored for a different
	// event (their warning event_id_reused): counted as duplicates with code event_id_reused, the
	// other duplicates with code "". ingest.ProblemCounts gives it, with Rejected, from the answer.
	IDReused int
}

// ObserveRequest counts one answered collect request and its events.
func (m *Metrics) ObserveRequest(r Request) {
	m.requests.WithLabelValues(r.Endpoint, r.Outcome).Inc()
	m.requestSeconds.WithLabelValues(r.Endpoint, strconv.Itoa(r.Status)).Observe(r.Took.Seconds())
	m.bodyBytes.WithLabelValues(r.Endpoint).Observe(float64(r.BodyBytes))
	if r.Accepted > 0 {
		m.events.WithLabelValues(r.Endpoint, "accepted", "").Add(float64(r.Accepted))
	}
	if plain := r.Duplicates - r.IDReused; plain > 0 {
		m.events.WithLabelValues(r.Endpoint, "duplicate", "").Add(float64(plain))
	}
	if r.IDReused > 0 {
		m.events.WithLabelValues(r.Endpoint, "duplicate", "event_id_reused").Add(float64(r.IDReused))
	}
	for code, n := range r.Rejected {
		m.events.WithLabelValues(r.Endpoint, "rejected", code).Add(float64(n))
	}
}

// ObserveCommit records one store transaction; its signature is the SQLite store's OnCommit hook.
func (m *Metrics) ObserveCommit(groupRequests, groupEvents int, took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.commitSeconds.WithLabelValues(result).Observe(took.Seconds())
	m.groupRequests.Observe(float64(groupRequests))
	m.groupEvents.Observe(float64(groupEvents))
}

// ObserveAuth counts one authentication by its result ("" is counted as ok); its signature is the
// source service's OnAuthenticate hook.
func (m *Metrics) ObserveAuth(reason string) {
	if reason == "" {
		m.authOK.Inc()
		return
	}
	m.auths.WithLabelValues(reason).Inc()
}

// ObserveKeyLookup counts one store lookup of a key; its signature is the source service's
// OnLookup hook.
func (m *Metrics) ObserveKeyLookup(found bool) {
	m.keyLookups.WithLabelValues(strconv.FormatBool(found)).Inc()
}

// ObserveDelivery counts settled events of a destination; its signature is the delivery
// engine's Observer.Attempts.
func (m *Metrics) ObserveDelivery(destination, outcome string, n int) {
	m.deliveries.WithLabelValues(destination, outcome).Add(float64(n))
}

// ObserveDestination sets a destination's gauges; its signature is the delivery engine's
// Observer.State.
func (m *Metrics) ObserveDestination(destination string, lagEvents int64, lagSeconds float64, retries int64, circuitOpen bool) {
	m.lagEvents.WithLabelValues(destination).Set(float64(lagEvents))
	m.lagSeconds.WithLabelValues(destination).Set(lagSeconds)
	m.retryRows.WithLabelValues(destination).Set(float64(retries))
	open := 0.0
	if circuitOpen {
		open = 1
	}
	m.circuitOpen.WithLabelValues(destination).Set(open)
}

// ObserveRetention counts what one retention pass removed.
func (m *Metrics) ObserveRetention(deleted, expired int64) {
	m.retentionGone.WithLabelValues("deleted").Add(float64(deleted))
	m.retentionGone.WithLabelValues("expired").Add(float64(expired))
}

// ObserveBodyBudget sets the bytes of the body budget held now.
func (m *Metrics) ObserveBodyBudget(held int64) {
	m.bodyBudgetHeld.Set(float64(held))
}

// ObserveConnections sets the open connections and whether the server is under connection
// pressure.
func (m *Metrics) ObserveConnections(open int, pressure bool) {
	m.connections.Set(float64(open))
	p := 0.0
	if pressure {
		p = 1
	}
	m.connPressure.Set(p)
}

// ObserveInspectorDropped counts inspector entries dropped for reason; its signature is the
// inspector capturer's OnDrop hook.
func (m *Metrics) ObserveInspectorDropped(reason string, n int) {
	m.inspectorDropped.WithLabelValues(reason).Add(float64(n))
}
