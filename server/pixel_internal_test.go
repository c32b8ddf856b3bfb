package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/gif"
	"runtime"
	"strings"
	"testing"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
)

// The JSON built from each form of pixel query, byte for byte.
func TestPixelEvent(t *testing.T) {
	tests := []struct{ name, query, want string }{
		{"flat", "event_name=page_view&page_type=home",
			`{"event_name":"page_view","page_type":"home"}`},
		{"tc_s and token are the request's", "tc_s=29&event_name=x&token=k",
			`{"event_name":"x"}`},
		{"objects", "user[consistent_anonymous_id]=a1&user[id]=7&context[page][title]=Home",
			`{"user":{"consistent_anonymous_id":"a1","id":"7"},"context":{"page":{"title":"Home"}}}`},
		{"appends", "user[consent_categories][]=1&user[consent_categories][]=3",
			`{"user":{"consent_categories":["1","3"]}}`},
		{"indexed objects", "items[0][product][id]=P1&items[0][quantity]=2&items[1][product][id]=P2",
			`{"items":[{"product":{"id":"P1"},"quantity":"2"},{"product":{"id":"P2"}}]}`},
		{"indices ordered, gaps closed", "items[5][id]=b&items[2][id]=a&items[999][id]=c",
			`{"items":[{"id":"a"},{"id":"b"},{"id":"c"}]}`},
		{"leading zeros", "a[007]=x&a[7]=y",
			`{"a":["y"]}`},
		{"append after indices", "a[3]=x&a[]=y&a[0]=z",
			`{"a":["z","x","y"]}`},
		{"append a new element each time", "a[][id]=1&a[][id]=2",
			`{"a":[{"id":"1"},{"id":"2"}]}`},
		{"arrays of arrays", "m[0][0]=a&m[0][1]=b&m[1][]=c",
			`{"m":[["a","b"],["c"]]}`},
		{"keys that are not indices", "a[-1]=x&a[1e3]=y&a[12x]=z&a[ 1]=w&a[1000000000000000000000x]=v",
			`{"a":{"-1":"x","1e3":"y","12x":"z"," 1":"w","1000000000000000000000x":"v"}}`},
		{"encoded brackets (jQuery)", "user%5Bid%5D=7&items%5B0%5D%5Bid%5D=s",
			`{"user":{"id":"7"},"items":[{"id":"s"}]}`},
		{"decoding and escaping", "q=%22a%22+%3Cb%3E+%26+caf%C3%A9%0A%5C%01&k%20%2B=%E2%80%A8",
			`{"q":"\"a\" <b> & café\n\\\u0001","k +":"` + "\u2028" + `"}`},
		{"empty values and bare names", "a=&b&c[]",
			`{"a":"","b":"","c":[""]}`},
		{"repeats are repeated keys", "page_type=a&page_type=b",
			`{"page_type":"a","page_type":"b"}`},
		{"a path goes through the last property of the kind it needs", "u[id]=1&u=x&u[e]=2&u[f]=3",
			`{"u":{"id":"1"},"u":"x","u":{"e":"2","f":"3"}}`},
		{"an index set again is replaced", "a[0]=x&a[0]=y&b[0]=s&b[0][id]=t&c[0][id]=u&c[0]=v",
			`{"a":["y"],"b":[{"id":"t"}],"c":["v"]}`},
		{"object then array under one name", "a[x]=1&a[0]=2&a[y]=3",
			`{"a":{"x":"1"},"a":["2"],"a":{"y":"3"}}`},
		{"empty pairs skipped", "&&a=1&&",
			`{"a":"1"}`},
		{"semicolons are text", "a=1;b=2",
			`{"a":"1;b=2"}`},
		{"nothing", "", `{}`},
		{"the deepest name allowed", "a[1][2][3][4][5][6][7][8][9][x]=y",
			`{"a":[[[[[[[[[{"x":"y"}]]]]]]]]]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, refusal := pixelEvent(tt.query)
			if refusal != nil {
				t.Fatalf("refused: %v", refusal)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if !json.Valid(got) {
				t.Errorf("not valid JSON: %s", got)
			}
		})
	}
}

// Queries refused as a whole, with their code.
func TestPixelEventRefusals(t *testing.T) {
	var many strings.Builder
	for i := range trackapi.PixelMaxParameters + 1 {
		fmt.Fprintf(&many, "&p%d=", i)
	}
	tests := []struct {
		name, query string
		code        gen.ErrorCode
	}{
		{"query over its limit", "a=" + strings.Repeat("x", trackapi.PixelQueryLimit-1), gen.ErrorCodePayloadTooLarge},
		{"event over its limit", "a=" + strings.Repeat("%01", 10000), gen.ErrorCodePayloadTooLarge},
		{"too many parameters", many.String(), gen.ErrorCodeInvalidPayload},
		{"too deep", "a[1][2][3][4][5][6][7][8][9][10][11]=y", gen.ErrorCodeInvalidPayload},
		{"index over the bound", "items[1000][id]=x", gen.ErrorCodeInvalidPayload},
		{"index far over the bound", "items[999999999][id]=x", gen.ErrorCodeInvalidPayload},
		{"index past int64", "items[99999999999999999999999999]=x", gen.ErrorCodeInvalidPayload},
		{"no name", "=x", gen.ErrorCodeInvalidPayload},
		{"brackets without a name", "[a]=x", gen.ErrorCodeInvalidPayload},
		{"unclosed bracket", "a[b=x", gen.ErrorCodeInvalidPayload},
		{"closing bracket alone", "a]=x", gen.ErrorCodeInvalidPayload},
		{"text after a bracket", "a[b]c=x", gen.ErrorCodeInvalidPayload},
		{"nested opening bracket", "a[[b]]=x", gen.ErrorCodeInvalidPayload},
		{"bad escape in a value", "a=%zz", gen.ErrorCodeInvalidPayload},
		{"bad escape in a name", "a%=x", gen.ErrorCodeInvalidPayload},
		{"invalid UTF-8", "a=%ff", gen.ErrorCodeInvalidPayload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, refusal := pixelEvent(tt.query)
			if refusal == nil {
				t.Fatalf("built %.200s", got)
			}
			if refusal.Code != tt.code {
				t.Errorf("code %s (%s), want %s", refusal.Code, refusal.Message, tt.code)
			}
		})
	}
	// At the bounds: accepted.
	var most strings.Builder
	for i := range trackapi.PixelMaxParameters {
		fmt.Fprintf(&most, "&p%d=", i)
	}
	for _, q := range []string{most.String(), "a=" + strings.Repeat("x", trackapi.PixelQueryLimit-10)} {
		if _, refusal := pixelEvent(q); refusal != nil {
			t.Errorf("a query at the bounds (%d bytes) refused: %v", len(q), refusal)
		}
	}
}

// Building what a hostile query asks for allocates no more than the pixel claims of the body
// budget, whatever the query's shape: so the budget bounds the memory pixels hold.
func TestPixelEventCost(t *testing.T) {
	fill := func(each func(i int) string) string {
		var b strings.Builder
		for i := 0; b.Len() < trackapi.PixelQueryLimit-100 && i < trackapi.PixelMaxParameters; i++ {
			b.WriteString(each(i))
		}
		return b.String()
	}
	queries := map[string]string{
		"deep distinct paths": fill(func(i int) string { return fmt.Sprintf("&%d[a][b][c][d][e][f][g][h][i][j]=", i) }),
		"deep appends":        fill(func(int) string { return "&a[][][][][][][][][][]=" }),
		"appends":             fill(func(int) string { return "&a[]=x" }),
		"sparse indices":      fill(func(i int) string { return fmt.Sprintf("&a[%d][%d]=", 999-i%1000, i%1000) }),
		"root keys":           fill(func(i int) string { return fmt.Sprintf("&k%d=v", i) }),
		"escapes":             "a=" + strings.Repeat("%01", (trackapi.PixelQueryLimit-2)/3),
		"decoded names":       fill(func(i int) string { return fmt.Sprintf("&k+%d[x+y]=a+b", i) }),
		"long value":          "a=" + strings.Repeat("x", trackapi.PixelQueryLimit-2),
		"only brackets":       strings.Repeat("[", trackapi.PixelQueryLimit),
		// What honest pixels send: their claims must stay small.
		"page view": "tc_s=4711&token=3f2c9a10-5b7e-4c1d-9e8a-2d6f0b4c7a91&event_name=page_view&page_type=home&user[consistent_anonymous_id]=a1&user[consent_categories][]=1&user[consent_categories][]=3&context[event_id]=p-1&context[event_timestamp]=1718003600000",
		"purchase": fill(func(i int) string {
			return fmt.Sprintf("&items%%5B%d%%5D%%5Bproduct%%5D%%5Bname%%5D=Blue+runner+%d&items%%5B%d%%5D%%5Bquantity%%5D=2", i%50, i, i%50)
		})[:2000],
	}
	for name, q := range queries {
		t.Run(name, func(t *testing.T) {
			if len(q) > trackapi.PixelQueryLimit {
				t.Fatalf("the test's query is %d bytes", len(q))
			}
			_, _ = pixelEvent(q) // warm up
			// TotalAlloc counts every goroutine's allocations: other tests' background work (a
			// store's committer, a capturer) can add to one measurement, never take away. The
			// least of a few is the query's own.
			var refusal error
			allocated := uint64(1<<63 - 1)
			for range 5 {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				_, r := pixelEvent(q)
				runtime.ReadMemStats(&after)
				allocated = min(allocated, after.TotalAlloc-before.TotalAlloc)
				if r != nil {
					refusal = r
				}
			}
			claim := pixelClaim(q)
			if allocated > uint64(claim) {
				t.Errorf("a %d-byte query allocated %d bytes, over the %d it claims (refusal: %v)", len(q), allocated, claim, refusal)
			}
			if claim > 80*int64(len(q))+1024 || claim > 1_750_000 {
				t.Errorf("a %d-byte query claims %d bytes, more than 80 times its size or 1.75 MB", len(q), claim)
			}
			t.Logf("%d-byte query: %d bytes allocated (%.1f× the query), claim %d", len(q), allocated, float64(allocated)/float64(len(q)), claim)
		})
	}
}

// The GIF is a 1×1 image whose one pixel is transparent.
func TestTransparentGIF(t *testing.T) {
	img, err := gif.Decode(bytes.NewReader(transparentGIF))
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 1 || b.Dy() != 1 {
		t.Fatalf("%v, want 1×1", b)
	}
	if _, _, _, a := img.At(0, 0).RGBA(); a != 0 {
		t.Errorf("alpha %d, want 0 (transparent)", a)
	}
}

func TestAcceptsJSON(t *testing.T) {
	for accept, want := range map[string]bool{
		"application/json":                  true,
		"Application/JSON; charset=utf-8":   true,
		"text/html, application/json;q=0.5": true,
		"application/json;q=0":              false,
		"application/json;q=0.0, image/gif": false,
		"*/*":                               false,
		"image/avif,image/webp,image/apng,image/*,*/*;q=0.8": false,
		"application/jsonx": false,
		"":                  false,
	} {
		if got := acceptsJSON([]string{accept}); got != want {
			t.Errorf("acceptsJSON(%q) = %v, want %v", accept, got, want)
		}
	}
}

// Whatever the query, pixelEvent never panics, and builds valid JSON within the single event's
// limit, or refuses with one of the pixel's codes.
func FuzzPixelEvent(f *testing.F) {
	for _, seed := range []string{
		"event_name=page_view&user[consistent_anonymous_id]=a1&user[consent_categories][]=1&items[0][product][id]=P1",
		"a[0]=x&a[0][id]=y&a[]=z&a[b]=w&a=v", "user%5Bid%5D=7&%5B=1", "a[999][b][][c]=%01%22%5C", "=&[&]&a[b&a]b", "",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, query string) {
		got, refusal := pixelEvent(query)
		if refusal != nil {
			if refusal.Code != gen.ErrorCodeInvalidPayload && refusal.Code != gen.ErrorCodePayloadTooLarge {
				t.Fatalf("code %s", refusal.Code)
			}
			return
		}
		if !json.Valid(got) || len(got) > trackapi.SingleBodyLimit || got[0] != '{' {
			t.Fatalf("built %q", got)
		}
	})
}
