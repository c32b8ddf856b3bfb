package importer

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
)

// readLine keeps at most maxLine bytes of a line, however long, and says how many it consumed,
// so that a huge line costs bounded memory and the next line is still read whole.
func TestReadLineBoundsLongLines(t *testing.T) {
	long := strings.Repeat("x", maxLine+10)
	r := bufio.NewReaderSize(strings.NewReader("short\r\n"+long+"\nlast"), 4096)
	var buf []byte
	line, truncated, n, err := readLine(r, buf)
	if string(line) != "short\r" || truncated || n != 7 || err != nil {
		t.Errorf("first line %q, %v, %d, %v", line, truncated, n, err)
	}
	line, truncated, n, err = readLine(r, line[:0])
	if !truncated || n != len(long)+1 || len(line) > maxLine+1 || err != nil {
		t.Errorf("long line: %d bytes kept, %v, %d consumed, %v", len(line), truncated, n, err)
	}
	line, truncated, n, err = readLine(r, line[:0])
	if string(line) != "last" || truncated || n != 4 || err != io.EOF {
		t.Errorf("last line %q, %v, %d, %v", line, truncated, n, err)
	}
}

func TestTrimSpaceAndAsJSON(t *testing.T) {
	if got := trimSpace([]byte(" \t{}\r\n ")); string(got) != "{}" {
		t.Errorf("trimSpace: %q", got)
	}
	if got := asJSON([]byte(`{"a":1}`)); !bytes.Equal(got, []byte(`{"a":1}`)) {
		t.Errorf("JSON kept as it was: %s", got)
	}
	if got := asJSON([]byte(`not "json"`)); string(got) != `"not \"json\""` {
		t.Errorf("a line that is not JSON as a string: %s", got)
	}
}
