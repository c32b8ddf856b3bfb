package main

import (
	"log/slog"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/deliver"
	"github.com/trackapi/trackapi/file"
	"github.com/trackapi/trackapi/forward"
	"github.com/trackapi/trackapi/kafka"
	"github.com/trackapi/trackapi/webhook"
)

// sinkFactories are the destination types this binary can deliver to, each with its package.
// log may be nil (the CLI only checks settings with them).
func sinkFactories(log *slog.Logger) map[string]deliver.SinkFactory {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return map[string]deliver.SinkFactory{
		trackapi.DestinationWebhook: func(d trackapi.Destination) (trackapi.Sink, error) {
			return webhook.New(d, webhook.Options{Logger: log})
		},
		trackapi.DestinationForward: func(d trackapi.Destination) (trackapi.Sink, error) {
			return forward.New(d, forward.Options{Logger: log})
		},
		trackapi.DestinationKafka: func(d trackapi.Destination) (trackapi.Sink, error) {
			return kafka.New(d, kafka.Options{Logger: log})
		},
		trackapi.DestinationFile: func(d trackapi.Destination) (trackapi.Sink, error) {
			return file.New(d, file.Options{Logger: log})
		},
	}
}
