package prismcheck

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// The shell reader reads commands as sh would (quotes over lines, continuations, $KEY) and keeps
// the answer comments right after a command, not the titles after a blank line.
func TestParseShell(t *testing.T) {
	snippet := `KEY=...   # printed on first start

# one event
curl -sS -X POST "http://h/events?tc_s=1&token=$KEY" \
  -H 'Content-Type: application/json' \
  -d '{"a":
       "b c"}'
# {"accepted":1,
#  "rejected":0}

# a batch
curl -sS -X POST "http://h/events/batch?tc_s=1" -H "Authorization: Bearer $KEY" -d '{"batch":[]}'
`
	cmds, err := parseShell(snippet, map[string]string{"KEY": "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cmds) != 3 || cmds[0].words[0] != "KEY=..." {
		t.Fatalf("commands %q", cmds)
	}
	if want := []string{`{"accepted":1,`, `"rejected":0}`}; !reflect.DeepEqual(cmds[1].comments, want) {
		t.Errorf("answer %q, want %q", cmds[1].comments, want)
	}
	if len(cmds[2].comments) != 0 {
		t.Errorf("the last command took comments %q", cmds[2].comments)
	}
	single, err := parseCurl(cmds[1].words)
	if err != nil {
		t.Fatal(err)
	}
	want := curlRequest{method: http.MethodPost, url: "http://h/events?tc_s=1&token=k1",
		header: http.Header{"Content-Type": {"application/json"}}, body: "{\"a\":\n       \"b c\"}"}
	if !reflect.DeepEqual(single, want) {
		t.Errorf("got %+v\nwant %+v", single, want)
	}
	batch, err := parseCurl(cmds[2].words)
	if err != nil || batch.header.Get("Authorization") != "Bearer k1" || batch.header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Errorf("got %+v, %v", batch, err)
	}
	if _, err := parseCurl(strings.Fields("curl --compressed http://h/")); err == nil {
		t.Error("an unknown curl option was taken")
	}
}

// The README's "Sending events" reads as two curl commands, each with the answer it shows.
func TestReadmeExamplesRead(t *testing.T) {
	exchanges := readmeExamples(t, repoRoot(t), "KEY")
	if len(exchanges) != 2 {
		t.Fatalf("%d curl commands in the README's Sending events, want 2", len(exchanges))
	}
	for _, ex := range exchanges {
		if ex.shown == "" || !strings.HasPrefix(ex.target, "/events") || len(ex.body) == 0 {
			t.Errorf("%+v", ex)
		}
	}
}
