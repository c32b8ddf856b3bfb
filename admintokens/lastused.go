package admintokens

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/trackapi/trackapi"
)

// lastUsedTracker turns "this token was used" on every request into at most one write a token
// every `every`. The write runs in the background, off the request's path. (It is the source
// keys' tracker in sources/, over the admin token store.)
type lastUsedTracker struct {
	every time.Duration

	mu      sync.Mutex
	pending map[int64]time.Time // used since the last write
	written map[int64]time.Time // when each token's last-used time was last written
	running sync.WaitGroup
	busy    bool
}

// used records a use of a token at now and starts a background write when one is due.
func (t *lastUsedTracker) used(id int64, now time.Time, store trackapi.AdminTokenStore, log *slog.Logger) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending[id] = now
	if t.busy || now.Sub(t.written[id]) < t.every {
		return
	}
	for id := range t.pending { // the write below carries every pending token
		t.written[id] = now
	}
	t.busy = true
	t.running.Add(1)
	go func() {
		defer t.running.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := t.flush(ctx, store); err != nil {
			log.Warn("recording when admin tokens were last used failed; will try again", "err", err)
		}
		t.mu.Lock()
		t.busy = false
		t.mu.Unlock()
	}()
}

// flush writes the pending last-used times.
func (t *lastUsedTracker) flush(ctx context.Context, store trackapi.AdminTokenStore) error {
	t.mu.Lock()
	batch := t.pending
	t.pending = map[int64]time.Time{}
	t.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	if err := store.TouchAdminTokens(ctx, batch); err != nil {
		t.mu.Lock()
		for id, at := range batch { // keep them for the next try, unless newer uses came in
			if _, newer := t.pending[id]; !newer {
				t.pending[id] = at
			}
		}
		t.mu.Unlock()
		return fmt.Errorf("touch admin tokens: %w", err)
	}
	return nil
}

func (t *lastUsedTracker) wait() { t.running.Wait() }
