package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// CertCheckInterval is how often, at most, the certificate files are looked at again: at the
// first handshake after it has passed since the last look, with one stat of each file. A
// certificate renewed on disk (by certbot, say) is served within about that long, and a flood of
// handshakes costs two stats a second.
const CertCheckInterval = time.Second

// CertReloader serves the certificate of a pair of PEM files (tls.Config.GetCertificate), and
// loads them again when either changes (another file, size or modification time). A pair that
// does not load (a half-written renewal, a key that does not match) leaves the certificate served
// as it was; the error is logged once for each version of the files.
type CertReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	now               func() time.Time
	interval          time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	loaded  [2]os.FileInfo // of the pair served
	failed  [2]os.FileInfo // of the last pair that did not load, not to log it again
	checked time.Time
}

// NewCertReloader loads the pair at once: an error means there is nothing to serve.
func NewCertReloader(certFile, keyFile string, log *slog.Logger) (*CertReloader, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &CertReloader{certFile: certFile, keyFile: keyFile, log: log, now: time.Now, interval: CertCheckInterval}
	stamps, err := r.stat()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	r.cert, r.loaded, r.checked = &cert, stamps, r.now()
	r.log.Info("TLS certificate loaded", certAttrs(certFile, &cert)...)
	return r, nil
}

// GetCertificate is tls.Config.GetCertificate.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); now.Sub(r.checked) >= r.interval {
		r.checked = now
		r.reload()
	}
	return r.cert, nil
}

// reload loads the pair when its files changed since the pair served, or since a pair that
// failed to load. Called with mu held.
func (r *CertReloader) reload() {
	stamps, err := r.stat()
	if err != nil {
		if !same(stamps, r.failed) {
			r.failed = stamps
			r.log.Error("TLS certificate files cannot be read; the previous certificate is still served", "err", err)
		}
		return
	}
	if same(stamps, r.loaded) || same(stamps, r.failed) {
		return
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		r.failed = stamps
		r.log.Error("the TLS certificate files changed but do not load; the previous certificate is still served",
			"cert", r.certFile, "key", r.keyFile, "err", err)
		return
	}
	r.cert, r.loaded, r.failed = &cert, stamps, [2]os.FileInfo{}
	r.log.Info("TLS certificate reloaded", certAttrs(r.certFile, &cert)...)
}

// stat looks at both files; a file it cannot stat has a nil FileInfo.
func (r *CertReloader) stat() ([2]os.FileInfo, error) {
	var stamps [2]os.FileInfo
	var errs []error
	for i, name := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		stamps[i] = fi
	}
	return stamps, errors.Join(errs...)
}

// same tells whether two looks at the pair saw the same files: the same file (device and inode),
// size and modification time for each.
func same(a, b [2]os.FileInfo) bool {
	for i := range a {
		switch {
		case a[i] == nil || b[i] == nil:
			if a[i] != b[i] {
				return false
			}
		case !os.SameFile(a[i], b[i]) || a[i].Size() != b[i].Size() || !a[i].ModTime().Equal(b[i].ModTime()):
			return false
		}
	}
	return true
}

func certAttrs(file string, cert *tls.Certificate) []any {
	attrs := []any{"cert", file}
	if leaf := cert.Leaf; leaf != nil {
		attrs = append(attrs, "subject", leaf.Subject.String(), "serial", leaf.SerialNumber.String(),
			"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return attrs
}

// TLSConfig is the configuration of a listener serving r's certificate: TLS 1.2 at least, and
// HTTP/2 offered beside HTTP/1.1 (net/http adds both when it serves it).
func TLSConfig(r *CertReloader) *tls.Config {
	return &tls.Config{GetCertificate: r.GetCertificate, MinVersion: tls.VersionTLS12}
}
