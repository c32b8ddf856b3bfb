package netguard

import (
	"errors"
	"net/netip"
	"testing"
)

func TestRefused(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1": true, "127.255.255.254": true, "10.0.0.1": true, "172.16.0.1": true, "172.31.255.255": true,
		"192.168.0.1": true, "169.254.169.254": true, "0.0.0.0": true, "0.1.2.3": true, "100.64.0.1": true,
		"224.0.0.1": true, "239.255.255.250": true, "255.255.255.255": true, "240.0.0.1": true, "198.18.0.1": true,
		"192.0.0.8": true, "::1": true, "::": true, "fc00::1": true, "fdff::1": true, "fe80::1": true, "fe80::1%eth0": true,
		"ff02::1": true, "ff01::1": true, "fec0::1": true, "::ffff:127.0.0.1": true, "::ffff:192.168.1.1": true,
		"64:ff9b::a00:1": true, "64:ff9b::7f00:1": true,
		"93.184.216.34": false, "8.8.8.8": false, "172.32.0.1": false, "100.128.0.1": false, "192.0.2.1": false,
		"2001:4860:4860::8888": false, "::ffff:8.8.8.8": false, "64:ff9b::808:808": false, "2606:4700::1111": false,
	} {
		if got := Refused(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Refused(%s) = %t, want %t", addr, got, want)
		}
	}
	if !Refused(netip.Addr{}) {
		t.Error("the zero address is not refused")
	}
	if err := DialControl("tcp4", "127.0.0.1:80", nil); !errors.Is(err, ErrPrivateAddress) {
		t.Errorf("DialControl(127.0.0.1:80): %v", err)
	}
	if err := DialControl("tcp6", "[2001:4860:4860::8888]:443", nil); err != nil {
		t.Errorf("DialControl(public): %v", err)
	}
}

func TestCheckHost(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1": true, "10.1.2.3": true, "::1": true, "fe80::1%eth0": true, "::ffff:192.168.0.1": true,
		"example.com": false, "8.8.8.8": false, "localhost": false, // a name: checked when dialled
	} {
		if err := CheckHost(host); (err != nil) != want || (err != nil && !errors.Is(err, ErrPrivateAddress)) {
			t.Errorf("CheckHost(%s) = %v, want refused %t", host, err, want)
		}
	}
}
