package admin_test

import (
	"errors"
	"math"
	"math/big"
	"net/http"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/trackapi/trackapi/admin"
)

// FuzzParseCursor: a cursor (`after`) is accepted exactly when it is a decimal int64 of at
// least 0, digits only, and it then reads as that number; anything else is a 400 that names the
// parameter, never a panic. The spec's pattern keeps most bad cursors out before the parser; the
// parser must hold on its own.
func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"", "0", "1", "42", "007", "9223372036854775807", "9223372036854775808",
		"99999999999999999999", "-1", "-0", "+1", " 1", "1 ", "1_000", "0x10", "1e3", "١٢", "abc"} {
		f.Add(s)
	}
	max := big.NewInt(math.MaxInt64)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := admin.ParseCursor(&s)
		// The oracle: digits only, within int64.
		want, ok := new(big.Int), s != ""
		for _, c := range []byte(s) {
			if c < '0' || c > '9' {
				ok = false
			}
		}
		if ok {
			want.SetString(s, 10)
			ok = want.Cmp(max) <= 0
		}
		switch {
		case s == "":
			if got != 0 || err != nil {
				t.Fatalf("the empty cursor: %d, %v; want the start (0)", got, err)
			}
		case ok:
			if err != nil || got != want.Int64() {
				t.Fatalf("cursor %q: %d, %v; want %s", s, got, err, want)
			}
		default:
			var he *echo.HTTPError
			if err == nil {
				t.Fatalf("cursor %q accepted as %d; want a 400", s, got)
			}
			if !errors.As(err, &he) || he.Code != http.StatusBadRequest {
				t.Fatalf("cursor %q: %v; want a 400", s, err)
			}
		}
	})
}

// No cursor is the start.
func TestParseCursorNil(t *testing.T) {
	if got, err := admin.ParseCursor(nil); got != 0 || err != nil {
		t.Fatalf("nil: %d, %v", got, err)
	}
}
