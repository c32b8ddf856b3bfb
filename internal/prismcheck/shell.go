package prismcheck

import (
	"fmt"
	"net/http"
	"strings"
)

// shellCommand is one command of a shell snippet: its words, and the comment lines right after it
// (in the README, the answer it shows).
type shellCommand struct {
	words    []string
	comments []string
}

// parseShell splits a snippet of sh, as the README and `trackapi serve` write them, into commands:
// words split on unquoted blanks, '...' taken literally (newlines included), "..." and bare words
// with $NAME expanded from vars (unknown names stay as written), a backslash-newline joining lines,
// and # starting a comment at the start of a word. Comment lines right after a command, with no
// blank line between, are that command's.
func parseShell(s string, vars map[string]string) ([]shellCommand, error) {
	var (
		cmds         []shellCommand
		cur          shellCommand
		word         strings.Builder
		inWord       bool
		attach       bool // a comment line now belongs to the last command
		afterComment bool // the newline ahead ends a comment line
	)
	endWord := func() {
		if inWord {
			cur.words = append(cur.words, word.String())
			word.Reset()
			inWord = false
		}
	}
	expand := func(i int) int { // $NAME at s[i]; returns the index of its last byte
		j := i + 1
		for j < len(s) && (s[j] == '_' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= 'a' && s[j] <= 'z' || j > i+1 && s[j] >= '0' && s[j] <= '9') {
			j++
		}
		if value, ok := vars[s[i+1:j]]; ok {
			word.WriteString(value)
		} else {
			word.WriteString(s[i:j])
		}
		inWord = true
		return j - 1
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && s[i+1] == '\n':
			i++
		case c == '\\' && i+1 < len(s):
			word.WriteByte(s[i+1])
			inWord = true
			i++
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' at byte %d", i)
			}
			word.WriteString(s[i+1 : i+1+j])
			inWord = true
			i += j + 1
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				switch {
				case s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`"\$`, s[i+1]) >= 0:
					word.WriteByte(s[i+1])
					i++
				case s[i] == '$':
					i = expand(i)
				default:
					word.WriteByte(s[i])
				}
			}
			if i == len(s) {
				return nil, fmt.Errorf(`unterminated " in %q`, s)
			}
			inWord = true
		case c == '$':
			i = expand(i)
		case c == '#' && !inWord:
			end := strings.IndexByte(s[i:], '\n')
			if end < 0 {
				end = len(s) - i
			}
			if len(cur.words) == 0 && attach && len(cmds) > 0 {
				last := &cmds[len(cmds)-1]
				last.comments = append(last.comments, strings.TrimSpace(s[i+1:i+end]))
			}
			afterComment = true
			i += end - 1
		case c == '\n':
			switch {
			case len(cur.words) > 0 || inWord:
				endWord()
				cmds = append(cmds, cur)
				cur = shellCommand{}
				attach = true
			case !afterComment: // a blank line
				attach = false
			}
			afterComment = false
		case c == ' ' || c == '\t':
			endWord()
		default:
			word.WriteByte(c)
			inWord = true
		}
	}
	endWord()
	if len(cur.words) > 0 {
		cmds = append(cmds, cur)
	}
	return cmds, nil
}

// curlRequest is what a curl command of the README sends.
type curlRequest struct {
	method string
	url    string
	header http.Header
	body   string
}

// parseCurl reads the curl options the README uses; any other fails, so that a new one is noticed
// here rather than silently dropped.
func parseCurl(words []string) (curlRequest, error) {
	if len(words) == 0 || words[0] != "curl" {
		return curlRequest{}, fmt.Errorf("not a curl command: %q", words)
	}
	r := curlRequest{method: http.MethodGet, header: http.Header{}}
	for i := 1; i < len(words); i++ {
		w := words[i]
		arg := func() (string, error) {
			if i+1 >= len(words) {
				return "", fmt.Errorf("%s without its argument", w)
			}
			i++
			return words[i], nil
		}
		var err error
		switch w {
		case "-s", "-S", "-sS", "-Ss", "--silent", "--show-error":
		case "-X", "--request":
			r.method, err = arg()
		case "-H", "--header":
			var h string
			if h, err = arg(); err == nil {
				name, value, ok := strings.Cut(h, ":")
				if !ok {
					return r, fmt.Errorf("header %q", h)
				}
				r.header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
			}
		case "-d", "--data", "--data-binary", "--data-raw":
			r.body, err = arg()
			if r.method == http.MethodGet {
				r.method = http.MethodPost
			}
		default:
			if strings.HasPrefix(w, "-") {
				return r, fmt.Errorf("curl option %s: teach parseCurl what it does", w)
			}
			if r.url != "" {
				return r, fmt.Errorf("two URLs: %s and %s", r.url, w)
			}
			r.url = w
		}
		if err != nil {
			return r, err
		}
	}
	if r.url == "" {
		return r, fmt.Errorf("no URL in %q", words)
	}
	if r.body != "" && r.header.Get("Content-Type") == "" {
		r.header.Set("Content-Type", "application/x-www-form-urlencoded") // what curl -d sends
	}
	return r, nil
}
