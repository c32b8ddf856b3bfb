package ingest

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// readmeSection is the text of the README's section under heading (up to the next heading).
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no %q", heading)
	}
	if end := strings.Index(after, "\n#"); end >= 0 {
		after = after[:end]
	}
	return after
}

// The README's table of standard events is the spec's list, row for row.
func TestReadmeStandardEventsTable(t *testing.T) {
	standard, err := StandardEvents()
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `([a-z_]+)` \\| (.*) \\|$")
	table := map[string][]string{}
	for _, line := range strings.Split(readmeSection(t, "### Standard events"), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if _, dup := table[m[1]]; dup {
			t.Errorf("README lists %s twice", m[1])
		}
		props := []string{}
		if m[2] != "–" {
			for _, p := range strings.Split(m[2], ", ") {
				props = append(props, strings.Trim(p, "`"))
			}
		}
		table[m[1]] = props
	}
	if !maps.EqualFunc(table, standard, slices.Equal) {
		t.Errorf("README.md's standard events\n%v\ndiffer from openapi.yaml's StandardEvents\n%v", table, standard)
	}
}

// The README's legacy example: the first JSON block, sent, is stored as the second, with the
// warning quoted after them.
func TestReadmeLegacyExample(t *testing.T) {
	section := readmeSection(t, "### Legacy payloads")
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(section, -1)
	if len(blocks) != 2 {
		t.Fatalf("%d JSON blocks in the README's legacy section, want 2 (before, after)", len(blocks))
	}
	c, store := newTestCollector(t)
	res := collectOK(t, c, false, blocks[0][1])
	if res.Accepted != 1 || len(res.Warnings) != 1 {
		t.Fatalf("%+v", res)
	}
	var want, got bytes.Buffer
	if err := json.Compact(&want, []byte(blocks[1][1])); err != nil {
		t.Fatal(err)
	}
	if err := json.Compact(&got, store.last[0].Body); err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() {
		t.Errorf("stored\n%s\nthe README says\n%s", got.String(), want.String())
	}
	warning, err := json.Marshal(res.Warnings[0])
	if err != nil {
		t.Fatal(err)
	}
	var readmeWarning map[string]any
	quoted := section[strings.LastIndex(section, "`{")+1 : strings.LastIndex(section, "}`")+1]
	if err := json.Unmarshal([]byte(strings.ReplaceAll(quoted, "\n", " ")), &readmeWarning); err != nil {
		t.Fatalf("the README's warning %q: %v", quoted, err)
	}
	var sent map[string]any
	_ = json.Unmarshal(warning, &sent)
	if !maps.Equal(readmeWarning, sent) {
		t.Errorf("warning %s, the README says %v", warning, readmeWarning)
	}
}
