package main

import (
	"log/slog"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/deliver"
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
	}
}
