// Package file is the sink of file destinations: it appends envelopes as NDJSON (one
// trackapi.Envelope JSON a line) to one file an hour, <path>/<YYYY-MM-DDTHH>.ndjson in UTC, for
// pipelines that pick files up (a batch loader, a log shipper, an archive).
//
// Deliver returns success only after the lines are synced to disk (File.Sync), so the delivery
// engine moves its cursor past events that are durably written. A failed write or sync fails the
// whole batch, retryably. Delivery is at least once: a write that failed after some bytes reached
// the file is cut back when possible, but lines that were written before a sync failed, or before
// a crash, are written again by the engine's retry, so readers deduplicate on the envelope's id.
//
// The current hour's file stays open between calls; it is closed when the hour changes and by
// Close. Files are created 0600 and the directory 0700: events carry visitors' data.
package file

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/trackapi/trackapi"
)

// DefaultBatchSize is the batch size of a file destination whose BatchSize is 0: each batch
// costs one write and one fsync, so larger batches are cheaper, up to what a retry rewrites.
const DefaultBatchSize = 1000

// Options are the optional settings of New. The zero value is the default.
type Options struct {
	Logger *slog.Logger // nil: slog.Default()
	// Now is the clock that picks the hour's file, for tests of rotation; nil: time.Now.
	Now func() time.Time
}

// Sink appends envelopes to hourly NDJSON files in one directory. It is safe for concurrent use;
// deliveries are written one after the other.
type Sink struct {
	dir string
	now func() time.Time
	log *slog.Logger

	mu   sync.Mutex
	f    *os.File // the current hour's file, nil when none is open
	name string   // its base name
}

var (
	_ trackapi.Sink      = (*Sink)(nil)
	_ trackapi.Previewer = (*Sink)(nil) // the config API's dry run finds Preview through it
)

// fileLayout names the hourly files: the UTC hour, sorting in time order.
const fileLayout = "2006-01-02T15"

// New returns the sink of a file destination. The directory is made on the first Deliver, so
// that a destination can be made before its disk is mounted; a path that cannot be written shows
// up as retryable io failures, in the destination's issues.
func New(d trackapi.Destination, opts Options) (*Sink, error) {
	if d.Type != trackapi.DestinationFile {
		return nil, fmt.Errorf("file: destination %d is of type %q, not %q", d.ID, d.Type, trackapi.DestinationFile)
	}
	if d.Config.Path == "" {
		return nil, fmt.Errorf("file: destination %d: no path", d.ID)
	}
	dir, err := filepath.Abs(d.Config.Path) // the server's working directory must not move the files
	if err != nil {
		return nil, fmt.Errorf("file: destination %d: path %q: %w", d.ID, d.Config.Path, err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Sink{dir: dir, now: opts.Now, log: opts.Logger.With("destination", d.ID, "path", dir)}, nil
}

// Deliver appends one line per envelope to the file of the current hour and syncs it. An
// envelope that cannot be encoded is refused for good; the others succeed or fail together.
func (s *Sink) Deliver(ctx context.Context, batch []trackapi.Envelope) []trackapi.DeliveryResult {
	results := make([]trackapi.DeliveryResult, len(batch))
	var buf bytes.Buffer
	written := s.encode(batch, results, &buf)
	if len(written) == 0 {
		return results
	}
	if err := ctx.Err(); err != nil {
		// The attempt is over before it began; nothing was written.
		s.failAll(results, written, "timeout", fmt.Errorf("file: %w", context.Cause(ctx)), s.dir, buf.Bytes())
		return results
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	path, err := s.append(buf.Bytes())
	if err != nil {
		reason := "io"
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			reason = "disk_full"
		}
		s.failAll(results, written, reason, err, path, buf.Bytes())
	}
	return results
}

// Preview shows the lines Deliver would append for batch, without writing them, as one "WRITE"
// request: the URL is file://<path>/<file of the current hour>, the file Deliver would append to
// now, and the body the NDJSON lines (cut to trackapi.SampleBodyLimit), encoded by the code Deliver
// uses; there are no headers. Envelopes Deliver would refuse (invalid_event) are left out; when
// every one would be, the error is the one Deliver would report.
func (s *Sink) Preview(batch []trackapi.Envelope) (trackapi.SampleRequest, error) {
	results := make([]trackapi.DeliveryResult, len(batch))
	var buf bytes.Buffer
	if written := s.encode(batch, results, &buf); len(written) == 0 {
		for _, r := range results {
			if r.Err != nil {
				return trackapi.SampleRequest{}, r.Err
			}
		}
		return trackapi.SampleRequest{}, errors.New("file: preview: the batch is empty, nothing would be written")
	}
	return s.writeRequest(filepath.Join(s.dir, s.fileName()), buf.Bytes()), nil
}

// encode appends to buf the line of each envelope, as Deliver writes them and Preview shows them,
// and returns the indexes of the envelopes written. An envelope that cannot be encoded gets its
// permanent refusal in results (it never will be) and no line.
func (s *Sink) encode(batch []trackapi.Envelope, results []trackapi.DeliveryResult, buf *bytes.Buffer) (written []int) {
	for i, env := range batch {
		line, err := json.Marshal(env)
		if err != nil {
			err = fmt.Errorf("file: envelope %s: encoding it: %w", env.ID, err)
			results[i] = trackapi.DeliveryResult{Err: err, Permanent: true, Reason: "invalid_event",
				Sample: s.sample(s.dir, env.Event, err)}
			continue
		}
		buf.Write(line) // json.Marshal escapes newlines inside strings: one envelope, one line
		buf.WriteByte('\n')
		written = append(written, i)
	}
	return written
}

// fileName is the base name of the current hour's file, the one Deliver appends to now.
func (s *Sink) fileName() string {
	return s.now().UTC().Format(fileLayout) + ".ndjson"
}

// append writes data at the end of the current hour's file and syncs it, opening (and creating)
// the file when the hour changed. It returns the file's path, for samples.
func (s *Sink) append(data []byte) (string, error) {
	name := s.fileName()
	path := filepath.Join(s.dir, name)
	if s.f != nil && s.name != name {
		if err := s.closeFile(); err != nil {
			// Its lines were synced when they were written; a failed close loses nothing.
			s.log.Warn("file: closing the previous hour's file", "err", err)
		}
	}
	if s.f == nil {
		if err := s.open(name); err != nil {
			return path, err
		}
	}
	info, err := s.f.Stat()
	if err != nil {
		s.drop()
		return path, fmt.Errorf("file: %s: %w", path, err)
	}
	if _, err := s.f.Write(data); err != nil {
		// Some bytes may have reached the file: cut it back to where this write began, so that
		// the retry does not append after half a line. If that fails too, the half line stays,
		// and readers skip a line that does not parse.
		if terr := s.f.Truncate(info.Size()); terr != nil {
			s.log.Warn("file: cutting a failed write back", "file", path, "err", terr)
		}
		s.drop()
		return path, fmt.Errorf("file: writing %d bytes to %s: %w", len(data), path, err)
	}
	if err := s.f.Sync(); err != nil {
		// After a failed fsync the kernel may have dropped the dirty pages and a second fsync may
		// succeed without them: the file is reopened, and the retry writes the lines again.
		s.drop()
		return path, fmt.Errorf("file: syncing %s: %w", path, err)
	}
	return path, nil
}

// open opens (creating it if needed) the hour's file for appending. A new file's directory
// entry is synced too, so that the file itself survives a crash, not only its data.
func (s *Sink) open(name string) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("file: making the directory: %w", err)
	}
	path := filepath.Join(s.dir, name)
	_, statErr := os.Lstat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("file: opening %s: %w", path, err)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		if err := syncDir(s.dir); err != nil {
			_ = f.Close()
			return fmt.Errorf("file: syncing the directory of the new %s: %w", path, err)
		}
	}
	s.f, s.name = f, name
	return nil
}

// syncDir makes a directory's entries durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}

// drop closes the current file after a failure, so that the next call opens it afresh (it may
// have been removed or replaced meanwhile).
func (s *Sink) drop() {
	if err := s.closeFile(); err != nil {
		s.log.Debug("file: closing after a failure", "err", err)
	}
}

func (s *Sink) closeFile() error {
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f, s.name = nil, ""
	return err
}

// Close closes the current hour's file. Every line was synced when written, so nothing is lost.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.closeFile(); err != nil {
		return fmt.Errorf("file: closing %s: %w", s.dir, err)
	}
	return nil
}

// failAll gives every written envelope the same retryable failure: they were in one write.
func (s *Sink) failAll(results []trackapi.DeliveryResult, which []int, reason string, err error, path string, data []byte) {
	sample := s.sample(path, data, err)
	for _, i := range which {
		results[i] = trackapi.DeliveryResult{Err: err, Reason: reason, Sample: sample}
	}
}

// sample shows a failed write as a "WRITE" request (writeRequest) with the error.
func (s *Sink) sample(path string, data []byte, err error) *trackapi.DeliverySample {
	return &trackapi.DeliverySample{Request: s.writeRequest(path, data), Error: err.Error()}
}

// writeRequest shows a write as a request, in failure samples and previews alike: method "WRITE"
// (the config API's name for a file destination's operation), the file's URL, no headers, and the
// lines cut to trackapi.SampleBodyLimit.
func (s *Sink) writeRequest(path string, data []byte) trackapi.SampleRequest {
	return trackapi.SampleRequest{
		Method:  "WRITE",
		URL:     "file://" + filepath.ToSlash(path),
		Headers: map[string]string{},
		Body:    trackapi.SampleBody(data),
	}
}
