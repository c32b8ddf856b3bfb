package main_test

import (
	"crypto/tls"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trackapi/trackapi/internal/apitest"
	"github.com/trackapi/trackapi/internal/testcert"
)

// tlsProbe connects afresh to url (a new connection, so a new handshake) trusting ca, and
// returns the serial of the certificate served and the HTTP version of the answer.
func tlsProbe(t *testing.T, ca *testcert.CA, url string) (serial int64, protoMajor int, err error) {
	t.Helper()
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, ForceAttemptHTTP2: true}
	defer transport.CloseIdleConnections()
	resp, err := apitest.ClientWith(t, transport).Get(url)
	if err != nil {
		return 0, 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", url, resp.StatusCode)
	}
	return resp.TLS.PeerCertificates[0].SerialNumber.Int64(), resp.ProtoMajor, nil
}

// serve --tls-cert/--tls-key: both listeners speak TLS with HTTP/2, and a certificate replaced on
// disk is served to new connections within seconds, without a restart; files that do not load
// leave the previous one served and log an error.
func TestTLSWithReload(t *testing.T) {
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	install := func(serial int64, cn string) {
		cert, key := ca.Issue(t, serial, cn)
		testcert.Write(t, certFile, cert)
		testcert.Write(t, keyFile, key)
	}
	install(1001, "trackapi-one")
	data := t.TempDir()
	p := startServerWith(t, data, "--addr", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.Contains(p.stderr.String(), "tls=true") {
		t.Errorf("the log does not say TLS is on:\n%s", p.stderr)
	}
	public := strings.Replace(p.URL, "http://", "https://", 1)
	admin := strings.Replace(p.AdminURL, "http://", "https://", 1)
	if !strings.Contains(p.stdout.String(), "curl -sS -X POST '"+public+"/events?") || !strings.Contains(p.stdout.String(), admin+"/ui/") {
		t.Errorf("the first start's output does not name the https URLs:\n%s", p.stdout)
	}
	urls := []string{public + "/healthz", admin + "/healthz"}
	for _, url := range urls {
		serial, proto, err := tlsProbe(t, ca, url)
		if err != nil || serial != 1001 || proto != 2 {
			t.Fatalf("%s: serial %d over HTTP/%d (%v), want 1001 over HTTP/2", url, serial, proto, err)
		}
	}
	// An event over HTTP/2.
	key := firstKey(t, p)
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, ForceAttemptHTTP2: true}
	resp, err := apitest.ClientWith(t, transport).Post(public+"/events?tc_s=1&token="+key, "text/plain",
		strings.NewReader(`{"event_name":"x","context":{"event_id":"over-tls"}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	transport.CloseIdleConnections()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("POST over TLS: %d over HTTP/%d", resp.StatusCode, resp.ProtoMajor)
	}

	// waitSerial waits until new connections to every listener get serial.
	waitSerial := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for _, url := range urls {
			for {
				serial, _, err := tlsProbe(t, ca, url)
				if err == nil && serial == want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s still serves %d (%v), want %d\n%s", url, serial, err, want, p.stderr)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	install(1002, "trackapi-two")
	waitSerial(1002)

	// A broken certificate file: the previous certificate stays, an error is logged.
	testcert.Write(t, certFile, []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"))
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stderr.String(), "level=ERROR") {
		if time.Now().After(deadline) {
			t.Fatalf("no error logged for a broken certificate file:\n%s", p.stderr)
		}
		if serial, _, err := tlsProbe(t, ca, urls[0]); err != nil || serial != 1002 {
			t.Fatalf("with a broken file: serial %d (%v), want 1002 still", serial, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // past the next look at the files
	for _, url := range urls {
		if serial, _, err := tlsProbe(t, ca, url); err != nil || serial != 1002 {
			t.Fatalf("%s with a broken file: serial %d (%v), want 1002 still", url, serial, err)
		}
	}
	if n := strings.Count(p.stderr.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d error lines for one broken version of the files, want 1:\n%s", n, p.stderr)
	}
	install(1003, "trackapi-three")
	waitSerial(1003)
	if counts, _ := export(t, data); counts["over-tls"] != 1 {
		t.Errorf("stored: %v", counts)
	}
}

// --tls-cert and --tls-key go together, and must load: else the server does not start (exit 2).
func TestTLSFlagsChecked(t *testing.T) {
	dir := t.TempDir()
	for _, flags := range [][]string{
		{"--tls-cert", filepath.Join(dir, "cert.pem")},
		{"--tls-key", filepath.Join(dir, "key.pem")},
		{"--tls-cert", filepath.Join(dir, "cert.pem"), "--tls-key", filepath.Join(dir, "key.pem")},
	} {
		args := append([]string{"serve", "--data", t.TempDir(), "--addr", "127.0.0.1:0"}, flags...)
		_, stderr, code := runCLIEnv(t, nil, args...)
		if code != 2 || !strings.Contains(stderr, "--tls-") {
			t.Errorf("%v: exit %d\n%s", flags, code, stderr)
		}
	}
}
