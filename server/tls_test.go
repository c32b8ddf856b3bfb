package server_test

import (
	"bytes"
	"crypto/tls"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/trackapi/trackapi/internal/apitest"
	"github.com/trackapi/trackapi/internal/testcert"
	"github.com/trackapi/trackapi/internal/testenv"
	"github.com/trackapi/trackapi/server"
)

// With TLS, the collect API is served over HTTP/2 to clients that offer it and HTTP/1.1 to the
// others, on the same listener.
func TestTLSServesHTTP2AndHTTP1(t *testing.T) {
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cert, key := ca.Issue(t, 7, "trackapi")
	testcert.Write(t, certFile, cert)
	testcert.Write(t, keyFile, key)
	certs, err := server.NewCertReloader(certFile, keyFile, testenv.Quiet)
	if err != nil {
		t.Fatal(err)
	}
	s := testenv.Start(t, testenv.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := server.NewHTTPServer(s.Handler, ln, server.HTTPOptions{Logger: testenv.Quiet, TLS: server.TLSConfig(certs)})
	go func() { _ = hs.Serve() }()
	t.Cleanup(func() { _ = hs.Close() })

	for i, h2 := range []bool{true, false} {
		transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, ForceAttemptHTTP2: h2}
		if !h2 {
			transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1 only
		}
		client := apitest.ClientWith(t, transport)
		url := "https://" + ln.Addr().String() + "/events?tc_s=" + s.Site + "&token=" + s.Key
		body := []byte(`{"event_name":"x","context":{"event_id":"tls-` + string(rune('a'+i)) + `"}}`)
		resp, err := client.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := 1
		if h2 {
			want = 2
		}
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != want {
			t.Errorf("status %d over HTTP/%d, want 200 over HTTP/%d", resp.StatusCode, resp.ProtoMajor, want)
		}
		if got := resp.TLS.PeerCertificates[0].SerialNumber.Int64(); got != 7 {
			t.Errorf("serial %d", got)
		}
		transport.CloseIdleConnections()
	}
	if n := len(testenv.Stored(t, s.DB)); n != 2 {
		t.Errorf("%d stored, want 2", n)
	}
}
