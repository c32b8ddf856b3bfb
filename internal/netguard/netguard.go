// Package netguard keeps destinations from becoming a way into the local network (SSRF): the
// webhook and forward sinks refuse loopback, private, link-local and other non-public addresses
// unless a destination allows them, both in the URL and at every connection, after name
// resolution, so that a name that resolves (or later re-resolves) to such an address is refused
// too.
package netguard

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
)

// ErrPrivateAddress is wrapped by CheckHost's and DialControl's errors: the address is one a
// destination without AllowPrivate may not reach.
var ErrPrivateAddress = errors.New("private address refused")

// blockedPrefixes are ranges that netip's Is* methods do not cover but that reach the local
// network, the host, or nothing public: "this network" (0.0.0.0/8, which Linux routes to the
// host), carrier-grade NAT (some clouds serve metadata from it), IETF protocol assignments,
// benchmarking, the reserved class E with the broadcast address, and IPv6's deprecated site-local
// range.
var blockedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("fec0::/10"),
}

// nat64 is the well-known NAT64 prefix: on a NAT64 network 64:ff9b::7f00:1 reaches 127.0.0.1, so
// the IPv4 address it embeds is checked too.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// Refused reports whether a is an address a destination without AllowPrivate must not reach:
// loopback, private (RFC 1918, RFC 4193), link-local, unspecified, multicast, and blockedPrefixes.
// An IPv4-mapped IPv6 address is judged by its IPv4 address.
func Refused(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	if !a.IsValid() {
		return true
	}
	if a.IsLoopback() || a.IsPrivate() || a.IsUnspecified() || a.IsMulticast() ||
		a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() {
		return true
	}
	for _, p := range blockedPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	if nat64.Contains(a) {
		b := a.As16()
		return Refused(netip.AddrFrom4([4]byte(b[12:])))
	}
	return false
}

// DialControl is a net.Dialer.Control: it runs once the name is resolved, for every address the
// dialer tries, before any packet is sent. Checking there, not only the URL at New, is what stops
// a name that resolves to a private address, or that changes to one after New (DNS rebinding).
func DialControl(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("dial %q: not an address and port: %w", address, err)
	}
	if Refused(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrPrivateAddress, ap.Addr())
	}
	return nil
}

// CheckHost refuses, before any connection, a URL host that is a refused IP literal or an IPv6
// address with a zone (link-local). Names, localhost among them, are checked by DialControl once
// resolved, since only then is their address known.
func CheckHost(host string) error {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if strings.Contains(h, "%") {
		return fmt.Errorf("host %s: %w", host, ErrPrivateAddress)
	}
	if a, err := netip.ParseAddr(h); err == nil && Refused(a) {
		return fmt.Errorf("host %s: %w", host, ErrPrivateAddress)
	}
	return nil
}
