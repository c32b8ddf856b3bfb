package kafka_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/internal/testenv"
	"github.com/trackapi/trackapi/kafka"
)

// The cluster of these tests is kfake, franz-go's in-process fake: no real broker can run on the
// project's machines. It does not replicate or fsync, so these tests check the sink's use of the
// protocol (keys, headers, acks, errors), not Kafka's durability.

const topic = "events"

func newCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(3), kfake.SeedTopics(3, topic)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newSink(t *testing.T, brokers []string, opts kafka.Options) *kafka.Sink {
	t.Helper()
	opts.Logger = testenv.Quiet
	s, err := kafka.New(trackapi.Destination{ID: 7, Type: trackapi.DestinationKafka,
		Config: trackapi.DestinationConfig{Brokers: brokers, Topic: topic}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func envelope(seq int64, event string) trackapi.Envelope {
	id := fmt.Sprintf("ev-%d", seq)
	return trackapi.Envelope{
		ID: "3:" + id, SourceID: 3, Site: "29", ReceivedAt: 1700000000000 + seq,
		Event: json.RawMessage(event), Seq: seq, EventID: id,
	}
}

func eventWithUser(seq int64, user string) string {
	return fmt.Sprintf(`{"event_name":"page_view","user":{"consistent_anonymous_id":%s},"context":{"event_id":"ev-%d"}}`, user, seq)
}

// consume reads n records of the topic from the start.
func consume(t *testing.T, brokers []string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d records of %d: %v", len(out), n, ctx.Err())
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetching %s/%d: %v", topic, p, err) })
		out = append(out, fs.Records()...)
	}
	return out
}

func headers(r *kgo.Record) map[string]string {
	h := map[string]string{}
	for _, kv := range r.Headers {
		h[kv.Key] = string(kv.Value)
	}
	return h
}

func deliver(t *testing.T, s *kafka.Sink, timeout time.Duration, batch ...trackapi.Envelope) []trackapi.DeliveryResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res := s.Deliver(ctx, batch)
	if len(res) != len(batch) {
		t.Fatalf("%d results for %d envelopes", len(res), len(batch))
	}
	return res
}

func TestDeliverProducesKeyedRecordsWithHeaders(t *testing.T) {
	c := newCluster(t)
	s := newSink(t, c.ListenAddrs(), kafka.Options{})
	batch := []trackapi.Envelope{
		envelope(1, eventWithUser(1, `"visitor-a"`)),
		envelope(2, eventWithUser(2, `12345`)),
		envelope(3, `{"event_name":"search","context":{"event_id":"ev-3"}}`),
		envelope(4, eventWithUser(4, `"visitor-a"`)),
	}
	for i, r := range deliver(t, s, 10*time.Second, batch...) {
		if r.Err != nil || r.Reason != "" || r.Sample != nil {
			t.Fatalf("envelope %d: %+v", i, r)
		}
	}

	wantKeys := map[string]string{"ev-1": "visitor-a", "ev-2": "12345", "ev-3": "", "ev-4": "visitor-a"}
	got := consume(t, c.ListenAddrs(), len(batch))
	if len(got) != len(batch) {
		t.Fatalf("consumed %d records, want %d", len(got), len(batch))
	}
	partitionOf := map[string]int32{}
	for _, r := range got {
		h := headers(r)
		id := h["event_id"]
		env := batch[map[string]int{"ev-1": 0, "ev-2": 1, "ev-3": 2, "ev-4": 3}[id]]
		if h["source_id"] != "3" || len(h) != 2 {
			t.Errorf("record %s: headers %v", id, h)
		}
		if string(r.Key) != wantKeys[id] {
			t.Errorf("record %s: key %q, want %q", id, r.Key, wantKeys[id])
		}
		if id == "ev-3" && r.Key != nil {
			t.Errorf("record ev-3: key %q, want none (null)", r.Key)
		}
		want, _ := json.Marshal(env)
		if string(r.Value) != string(want) {
			t.Errorf("record %s: value %s, want %s", id, r.Value, want)
		}
		var back trackapi.Envelope
		if err := json.Unmarshal(r.Value, &back); err != nil || back.ID != env.ID || back.SourceID != 3 || back.Site != "29" {
			t.Errorf("record %s: value does not read back as its envelope: %+v, %v", id, back, err)
		}
		partitionOf[id] = r.Partition
	}
	if partitionOf["ev-1"] != partitionOf["ev-4"] {
		t.Errorf("one visitor's events went to partitions %d and %d", partitionOf["ev-1"], partitionOf["ev-4"])
	}
}

// bigEvent is an event of about n bytes that compresses badly (hex of random bytes), so that
// the producer's compression cannot bring it under the broker's limit.
func bigEvent(seq int64, n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return fmt.Sprintf(`{"event_name":"blob","user":{"consistent_anonymous_id":"visitor-a"},"blob":"%s","context":{"event_id":"ev-%d"}}`,
		hex.EncodeToString(b), seq)
}

func TestRecordOverBrokerLimitFailsAlone(t *testing.T) {
	const limit = 8192
	for _, tc := range []struct {
		name string
		opts kafka.Options
	}{
		// The sink does not know the limit: the broker refuses the batch holding the large record,
		// and the sink sends its records again one by one.
		{"broker refuses", kafka.Options{}},
		// The sink is told the topic's limit: the producer refuses the record before sending it.
		{"producer refuses", kafka.Options{MaxRecordBytes: limit}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(limit)}))
			var produces atomic.Int32
			c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				produces.Add(1)
				return nil, nil, false // only counted: the cluster answers as usual
			})
			s := newSink(t, c.ListenAddrs(), tc.opts)
			// The same key puts the three in one partition, so the producer batches them together.
			batch := []trackapi.Envelope{
				envelope(1, eventWithUser(1, `"visitor-a"`)),
				envelope(2, bigEvent(2, 4*limit)),
				envelope(3, eventWithUser(3, `"visitor-a"`)),
			}
			res := deliver(t, s, 20*time.Second, batch...)
			if res[0].Err != nil || res[2].Err != nil {
				t.Fatalf("the small records failed with the large one: %+v / %+v", res[0], res[2])
			}
			r := res[1]
			if r.Err == nil || !r.Permanent || r.Reason != "kafka_message_too_large" {
				t.Fatalf("large record: %+v, want a permanent kafka_message_too_large", r)
			}
			smp := r.Sample
			if smp == nil || smp.Request.Method != "PRODUCE" || smp.Request.URL != "kafka://"+strings.Join(c.ListenAddrs(), ",")+"/"+topic ||
				smp.Request.Headers["event_id"] != "ev-2" || smp.Request.Headers["source_id"] != "3" || smp.Request.Headers["key"] != "visitor-a" ||
				len(smp.Request.Body) != trackapi.SampleBodyLimit || !strings.Contains(smp.Error, "MESSAGE_TOO_LARGE") || smp.Response != nil {
				t.Fatalf("sample: %+v", smp)
			}
			if n := produces.Load(); tc.opts.MaxRecordBytes == 0 && n < 4 {
				// One request with the three in a batch, refused; then one for each alone.
				t.Errorf("%d produce requests: the batch refused as too large was not sent again record by record", n)
			}
			got := consume(t, c.ListenAddrs(), 2)
			if len(got) != 2 || headers(got[0])["event_id"] != "ev-1" || headers(got[1])["event_id"] != "ev-3" {
				t.Fatalf("consumed %d records, want ev-1 and ev-3 in order", len(got))
			}
		})
	}
}

func TestUnreachableClusterIsRetryable(t *testing.T) {
	c := newCluster(t)
	brokers := c.ListenAddrs()
	c.Close()
	s := newSink(t, brokers, kafka.Options{CloseTimeout: 100 * time.Millisecond})
	start := time.Now()
	res := deliver(t, s, 2*time.Second, envelope(1, eventWithUser(1, `"a"`)), envelope(2, `{"event_name":"x"}`))
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("Deliver took %s with a 2 s deadline", took)
	}
	for i, r := range res {
		if r.Err == nil || r.Permanent || r.Reason != "connection_refused" || r.Sample == nil || !strings.Contains(r.Sample.Error, "refused") {
			t.Errorf("envelope %d: %+v (%v), want a retryable connection_refused with a sample", i, r, r.Err)
		}
	}
}

func TestClusterGoingAwayMidAttemptIsRetryable(t *testing.T) {
	c := newCluster(t)
	s := newSink(t, c.ListenAddrs(), kafka.Options{CloseTimeout: 100 * time.Millisecond})
	if r := deliver(t, s, 10*time.Second, envelope(1, `{"event_name":"x"}`)); r[0].Err != nil {
		t.Fatalf("first delivery: %v", r[0].Err)
	}
	c.Close()
	start := time.Now()
	res := deliver(t, s, 2*time.Second, envelope(2, `{"event_name":"x"}`))
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("Deliver took %s with a 2 s deadline", took)
	}
	if res[0].Err == nil || res[0].Permanent {
		t.Fatalf("after the cluster closed: %+v", res[0])
	}
}

// refuseProduce has every partition of the next produce request answered with code.
func refuseProduce(c *kfake.Cluster, code int16) {
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
}

func TestBrokerErrorsAreClassified(t *testing.T) {
	for _, tc := range []struct {
		err       *kerr.Error
		reason    string
		permanent bool
	}{
		{kerr.TopicAuthorizationFailed, "kafka_topic_authorization_failed", true},
		{kerr.InvalidTopicException, "kafka_invalid_topic_exception", true},
		// A retryable answer is retried by the producer until the attempt ends.
		{kerr.NotEnoughReplicas, "timeout", false},
	} {
		t.Run(tc.err.Message, func(t *testing.T) {
			c := newCluster(t)
			refuseProduce(c, tc.err.Code)
			s := newSink(t, c.ListenAddrs(), kafka.Options{CloseTimeout: 100 * time.Millisecond})
			r := deliver(t, s, 2*time.Second, envelope(1, `{"event_name":"x"}`))[0]
			if r.Err == nil || r.Permanent != tc.permanent || r.Reason != tc.reason || r.Sample == nil {
				t.Fatalf("%+v (%v), want reason %s, permanent %v", r, r.Err, tc.reason, tc.permanent)
			}
		})
	}
}

func TestInvalidEnvelopeIsPermanent(t *testing.T) {
	c := newCluster(t)
	s := newSink(t, c.ListenAddrs(), kafka.Options{})
	res := deliver(t, s, 10*time.Second, envelope(1, `{"event_name":`), envelope(2, `{"event_name":"x"}`))
	if res[0].Err == nil || !res[0].Permanent || res[0].Reason != "invalid_event" {
		t.Errorf("invalid JSON: %+v", res[0])
	}
	if res[1].Err != nil {
		t.Errorf("its neighbour: %v", res[1].Err)
	}
}

func TestNewRefusesBadDestinations(t *testing.T) {
	for name, d := range map[string]trackapi.Destination{
		"wrong type": {Type: trackapi.DestinationFile, Config: trackapi.DestinationConfig{Brokers: []string{"127.0.0.1:9092"}, Topic: topic}},
		"no brokers": {Type: trackapi.DestinationKafka, Config: trackapi.DestinationConfig{Topic: topic}},
		"no port":    {Type: trackapi.DestinationKafka, Config: trackapi.DestinationConfig{Brokers: []string{"kafka"}, Topic: topic}},
		"no topic":   {Type: trackapi.DestinationKafka, Config: trackapi.DestinationConfig{Brokers: []string{"127.0.0.1:9092"}}},
		"bad topic":  {Type: trackapi.DestinationKafka, Config: trackapi.DestinationConfig{Brokers: []string{"127.0.0.1:9092"}, Topic: "a/b"}},
	} {
		if s, err := kafka.New(d, kafka.Options{}); err == nil {
			_ = s.Close()
			t.Errorf("%s: no error", name)
		}
	}
}
