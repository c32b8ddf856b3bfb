package importer

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/trackapi/trackapi/client"
)

// startProgress shows a progress bar on a terminal (the share of the file done, events sent,
// rate, errors, why requests are being retried), or else prints a plain line every interval, so
// that logs of scripted runs show progress too. The returned function stops it.
func startProgress(stderr io.Writer, every time.Duration, size int64, start time.Time, s *sender, b *client.Batcher) func() {
	status := func() (sent int64, rate float64, errs int64, pending int64) {
		st := b.Stats()
		sent = st.Delivered() + st.Rejected + st.Failed
		rate = float64(sent) / max(time.Since(start).Seconds(), 0.001)
		return sent, rate, st.Rejected + st.Failed + s.invalid.Load() + s.notQueued.Load(), st.Pending()
	}
	// Against a server that is down, the counts stand still: say why, and when the next try is.
	retrying := func() string {
		if why := s.retries.describe(time.Now()); why != "" {
			return "; " + why
		}
		return ""
	}
	f, isFile := stderr.(*os.File)
	tty := isFile && term.IsTerminal(int(f.Fd()))
	stop, done := make(chan struct{}), make(chan struct{})
	if !tty {
		go func() {
			defer close(done)
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					sent, rate, errs, pending := status()
					fmt.Fprintf(stderr, "progress: %d events read, %d sent (%.0f/s), %d errors, %d pending%s\n",
						s.lines.Load(), sent, rate, errs, pending, retrying())
				}
			}
		}()
		return func() { close(stop); <-done }
	}
	bar := progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionSetPredictTime(size > 0),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(stderr) }),
	)
	update := func() {
		sent, rate, errs, _ := status()
		bar.Describe(fmt.Sprintf("%d events sent, %.0f/s, %d errors%s", sent, rate, errs, retrying()))
		if size <= 0 {
			bar.Set64(sent) // a spinner: there is no total to compare with
			return
		}
		// The share of the file done: the share read, times the share of what was read that has
		// its result. Kept under the total until the end, where the bar would finish by itself.
		done := int64(0)
		if lines := s.lines.Load(); lines > 0 {
			done = int64(float64(s.bytesRead.Load()) * float64(sent) / float64(lines))
		}
		bar.Set64(min(done, size-1))
	}
	go func() {
		defer close(done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				update()
				bar.Finish() // fills the bar and ends its line
				return
			case <-t.C:
				update()
			}
		}
	}()
	return func() { close(stop); <-done }
}
