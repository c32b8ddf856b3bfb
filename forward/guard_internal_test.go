package forward

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/trackapi/trackapi/internal/netguard"
)

// The check at New sees only literal addresses; the dialer's check sees where a name resolved
// to, and where a redirect leads.
func TestDialerRefusesPrivateAddresses(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()

	_, err := newHTTPClient(false, time.Second).Get(srv.URL)
	if !errors.Is(err, netguard.ErrPrivateAddress) {
		t.Fatalf("dialling %s: %v, want a refusal", srv.URL, err)
	}
	if got := networkReason(err); got != "private_address" {
		t.Errorf("reason %s, want private_address", got)
	}

	resp, err := newHTTPClient(true, time.Second).Get(srv.URL)
	if err != nil {
		t.Fatalf("with allow_private: %v", err)
	}
	_ = resp.Body.Close()
}
