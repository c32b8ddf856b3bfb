package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestClassify(t *testing.T) {
	dial := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)}
	}
	for _, tc := range []struct {
		err       error
		reason    string
		permanent bool
	}{
		{fmt.Errorf("%w (uncompressed_bytes=9)", kerr.MessageTooLarge), "kafka_message_too_large", true},
		{kerr.RecordListTooLarge, "kafka_record_list_too_large", true},
		{kerr.InvalidRecord, "kafka_invalid_record", true},
		{kerr.TopicAuthorizationFailed, "kafka_topic_authorization_failed", true},
		{kerr.InvalidTopicException, "kafka_invalid_topic_exception", true},
		{kerr.NotEnoughReplicas, "kafka_not_enough_replicas", false},
		{kerr.BrokerNotAvailable, "kafka_broker_not_available", false},
		{kerr.UnknownTopicOrPartition, "kafka_unknown_topic_or_partition", false},
		{kerr.ClusterAuthorizationFailed, "kafka_cluster_authorization_failed", false},
		{kerr.RequestTimedOut, "timeout", false},
		{kgo.ErrRecordTimeout, "timeout", false},
		{context.DeadlineExceeded, "timeout", false},
		{context.Canceled, "canceled", false},
		{dial(syscall.ECONNREFUSED), "connection_refused", false},
		{dial(syscall.ECONNRESET), "connection_reset", false},
		{&net.DNSError{Err: "no such host", Name: "kafka", IsNotFound: true}, "dns", false},
		{kgo.ErrClientClosed, "closed", false},
		{errors.New("something else"), "kafka_error", false},
		{&unacknowledgedError{cause: context.DeadlineExceeded}, "timeout", false},
		{&unacknowledgedError{cause: context.DeadlineExceeded, connErr: dial(syscall.ECONNREFUSED)}, "connection_refused", false},
		{&unacknowledgedError{cause: context.DeadlineExceeded, connErr: errors.New("odd")}, "timeout", false},
	} {
		reason, permanent := classify(tc.err)
		if reason != tc.reason || permanent != tc.permanent {
			t.Errorf("classify(%v) = %s, %v; want %s, %v", tc.err, reason, permanent, tc.reason, tc.permanent)
		}
	}
}

func TestPartitionKey(t *testing.T) {
	for event, want := range map[string]string{
		`{"user":{"consistent_anonymous_id":"abc"}}`: "abc",
		`{"user":{"consistent_anonymous_id":123}}`:   "123",
		`{"user":{"consistent_anonymous_id":""}}`:    "",
		`{"user":{"consistent_anonymous_id":null}}`:  "",
		`{"user":{"consistent_anonymous_id":{}}}`:    "",
		`{"user":"abc"}`:     "",
		`{"event_name":"x"}`: "",
		`not json`:           "",
	} {
		got := partitionKey([]byte(event))
		if string(got) != want || (want == "" && got != nil) {
			t.Errorf("partitionKey(%s) = %q, want %q", event, got, want)
		}
	}
}
