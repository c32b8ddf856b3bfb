package inspector

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/trackapi/trackapi"
)

// DefaultRetentionEvery is how often Retention runs when not told: the per-source cap is applied
// at each pass, so a source may hold a minute of entries over it in between.
const DefaultRetentionEvery = time.Minute

// Retention applies the inspector's retention (InspectorStore.DeleteExpiredInspectorEntries:
// 7 days, 1 day for test events, 10 000 entries a source, a month of counts) every Every.
type Retention struct {
	Store trackapi.InspectorStore
	Every time.Duration    // 0: DefaultRetentionEvery
	Now   func() time.Time // nil: time.Now
	// Observe, when set, is told how many entries each pass deleted.
	Observe func(deleted int)
	Logger  *slog.Logger // nil: slog.Default()
}

// Run applies retention at once and then every Every, until ctx ends. A failed pass is logged
// and tried again at the next.
func (r Retention) Run(ctx context.Context) {
	every := r.Every
	if every <= 0 {
		every = DefaultRetentionEvery
	}
	log := r.Logger
	if log == nil {
		log = slog.Default()
	}
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		if _, err := r.Pass(ctx); err != nil && ctx.Err() == nil {
			log.Error("inspector retention pass failed; trying again later", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// Pass applies retention once and returns how many entries it deleted.
func (r Retention) Pass(ctx context.Context) (int, error) {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	deleted, err := r.Store.DeleteExpiredInspectorEntries(ctx, now())
	if r.Observe != nil && deleted > 0 {
		r.Observe(deleted)
	}
	if err != nil {
		return deleted, fmt.Errorf("inspector retention: %w", err)
	}
	return deleted, nil
}
