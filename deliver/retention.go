package deliver

import (
	"context"
	"log/slog"
	"time"

	"github.com/trackapi/trackapi"
)

// StatsRetention is how long per-minute delivery counters are kept: a month, as the vendor's
// delivery statistics.
const StatsRetention = 31 * 24 * time.Hour

// retentionBatch bounds one delete transaction, so that retention never holds the store's single
// writer for long.
const retentionBatch = 5000

// Retention deletes events older than Keep, counting those a destination had not settled as
// expired (never dropped silently). On SQLite the freed pages are reused by new events, so once
// retention applies the database file stops growing under a steady load.
type Retention struct {
	Store trackapi.DeliveryStore
	Keep  time.Duration
	Every time.Duration // how often it runs; default 1 min
	Clock Clock         // nil: the real clock
	// Observe, when set, is told how many events each pass deleted and how many of them had not
	// been settled by some destination (counted once per such destination).
	Observe func(deleted, expired int64)
	Logger  *slog.Logger
}

// Run applies retention every Every until ctx ends.
func (r Retention) Run(ctx context.Context) {
	if r.Every <= 0 {
		r.Every = time.Minute
	}
	if r.Clock == nil {
		r.Clock = realClock{}
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	for {
		if err := r.Pass(ctx); err != nil && ctx.Err() == nil {
			r.Logger.Error("retention pass failed; trying again later", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-r.Clock.After(r.Every):
		}
	}
}

// Pass deletes, in bounded transactions, every event received before now - Keep.
func (r Retention) Pass(ctx context.Context) error {
	clock := r.Clock
	if clock == nil {
		clock = realClock{}
	}
	for {
		now := clock.Now()
		deleted, expired, err := r.Store.DeleteExpiredEvents(ctx, now.Add(-r.Keep), now.Add(-StatsRetention), now, retentionBatch)
		if err != nil {
			return err
		}
		var lost int64
		for id, n := range expired {
			lost += n
			if r.Logger != nil {
				r.Logger.Warn("retention removed events a destination had not settled; counted expired", "destination_id", id, "events", n)
			}
		}
		if r.Observe != nil && deleted > 0 {
			r.Observe(int64(deleted), lost)
		}
		if deleted < retentionBatch {
			return nil
		}
	}
}
