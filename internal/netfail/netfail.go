// Package netfail names the network failures of an HTTP request that got no answer, in the short
// reasons delivery issues are grouped by (timeout, connection_refused, dns, tls, ...). The
// webhook and forward sinks share it, so that the same failure has the same name whatever the
// destination.
package netfail

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/trackapi/trackapi/internal/netguard"
)

// Reason names err. ok is false when err is not a transport failure (say, an answer that could
// not be decoded), which each caller names itself.
func Reason(err error) (reason string, ok bool) {
	var (
		dnsErr      *net.DNSError
		netErr      net.Error
		recordErr   tls.RecordHeaderError
		alertErr    tls.AlertError
		verifyErr   *tls.CertificateVerificationError
		authorityEr x509.UnknownAuthorityError
		hostnameErr x509.HostnameError
		invalidErr  x509.CertificateInvalidError
	)
	switch {
	case err == nil:
		return "", false
	case errors.Is(err, netguard.ErrPrivateAddress):
		return "private_address", true
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout", true
	case errors.Is(err, context.Canceled): // the caller gave up (shutdown): nothing was learnt
		return "canceled", true
	case errors.As(err, &dnsErr):
		return "dns", true
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout", true
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused", true
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF): // closed before answering
		return "connection_reset", true
	case errors.As(err, &recordErr), errors.As(err, &alertErr), errors.As(err, &verifyErr),
		errors.As(err, &authorityEr), errors.As(err, &hostnameErr), errors.As(err, &invalidErr),
		strings.Contains(err.Error(), "tls: "): // crypto/tls makes most handshake errors with errors.New
		return "tls", true
	case errors.As(err, &netErr):
		return "network", true
	}
	return "", false
}
