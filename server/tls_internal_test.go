package server

import (
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trackapi/trackapi/internal/syncbuf"

	"github.com/trackapi/trackapi/internal/testcert"
)

// served is the serial number of the certificate r serves now.
func served(t *testing.T, r *CertReloader) int64 {
	t.Helper()
	cert, err := r.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	return cert.Leaf.SerialNumber.Int64()
}

// The files are looked at once an interval at most; a change is served after it; a pair that
// does not load, or a file gone, leaves the previous certificate served and is logged once.
func TestCertReloader(t *testing.T) {
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	install := func(serial int64) {
		cert, key := ca.Issue(t, serial, "trackapi")
		testcert.Write(t, certFile, cert)
		testcert.Write(t, keyFile, key)
	}
	install(1)
	var logs syncbuf.Buffer
	r, err := NewCertReloader(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	r.now = func() time.Time { return clock }
	tick := func() { clock = clock.Add(CertCheckInterval) }
	errorLines := func() int { return strings.Count(logs.String(), "level=ERROR") }

	if got := served(t, r); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}
	install(2)
	if got := served(t, r); got != 1 {
		t.Errorf("serial %d within the interval: the files were looked at again", got)
	}
	tick()
	if got := served(t, r); got != 2 {
		t.Fatalf("serial %d after the interval, want 2", got)
	}

	// A certificate whose key is another's, then a file that is no PEM: the old one stays.
	other, _ := ca.Issue(t, 3, "other")
	testcert.Write(t, certFile, other)
	for range 3 {
		tick()
		if got := served(t, r); got != 2 {
			t.Fatalf("serial %d with a mismatched key, want 2 still", got)
		}
	}
	if n := errorLines(); n != 1 || !strings.Contains(logs.String(), "do not load") {
		t.Errorf("%d error lines for one bad version of the files, want 1:\n%s", n, logs.String())
	}
	testcert.Write(t, certFile, []byte("not a certificate"))
	tick()
	if got := served(t, r); got != 2 || errorLines() != 2 {
		t.Errorf("serial %d, %d error lines after a second bad version", got, errorLines())
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	tick()
	served(t, r)
	tick()
	if got := served(t, r); got != 2 || errorLines() != 3 {
		t.Errorf("serial %d, %d error lines after the key went away", got, errorLines())
	}

	install(4)
	tick()
	if got := served(t, r); got != 4 {
		t.Errorf("serial %d once the files are good again, want 4", got)
	}
	if !strings.Contains(logs.String(), "TLS certificate reloaded") || !strings.Contains(logs.String(), "serial=4") {
		t.Errorf("no reload logged:\n%s", logs.String())
	}
}

// A pair that does not load at start is an error: there would be nothing to serve.
func TestCertReloaderStart(t *testing.T) {
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	cert, _ := ca.Issue(t, 1, "a")
	_, key := ca.Issue(t, 2, "b")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testcert.Write(t, certFile, cert)
	testcert.Write(t, keyFile, key)
	for _, files := range [][2]string{{certFile, keyFile}, {certFile, filepath.Join(dir, "missing.pem")}} {
		if _, err := NewCertReloader(files[0], files[1], slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("%v loaded", files)
		}
	}
}
