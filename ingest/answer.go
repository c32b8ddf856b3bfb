package ingest

import (
	"strconv"
	"unicode/utf8"

	"github.com/trackapi/trackapi"
	"github.com/trackapi/trackapi/gen"
)

// The bounds of a 200 answer (openapi.yaml, "Size of a 200 answer"). Without them an answer grew
// with its problems rather than with its request: a 569-byte gzipped batch of 170 662 empty
// objects with a wrong key got one invalid_source error an element, 22.6 MB, and a valid 512 KB
// batch of events without id or timestamp 11.7 MB of warnings.
const (
	// MaxListedProblems is how many problems errors, and warnings, list at most: the first ones
	// in the order of their index. Later ones are counted by code in errors_omitted and
	// warnings_omitted.
	MaxListedProblems = 100
	// MinAnswerBytes is the size an answer may always have, however small its request: enough for
	// every warning of a single event (a few normalisations and at most 11 schema warnings).
	MinAnswerBytes = 4096
	// MaxAnswerBytes is the most a 200 answer ever takes, whatever its request.
	MaxAnswerBytes = 65536
)

// AnswerLimit is the most bytes a 200 answer to a request body of bodyBytes (decompressed) takes,
// as encoding/json writes it (HTML characters escaped, one trailing newline): twice the body,
// at least MinAnswerBytes and at most MaxAnswerBytes.
func AnswerLimit(bodyBytes int) int {
	return min(max(2*bodyBytes, MinAnswerBytes), MaxAnswerBytes)
}

// answer builds the problem lists of a 200 within its byte budget. Each list keeps a prefix of its
// problems in the order they are added (by index): once one does not fit, in number or in bytes,
// the list stops, and that problem and every later one of the list is only counted by code.
type answer struct {
	budget   int // bytes left for listed problems
	errors   problemList
	warnings problemList
}

type problemList struct {
	listed  []gen.Problem
	stopped bool
	omitted []gen.ProblemCount // by code, in the order of first occurrence
}

// newAnswer reserves, from the limit of a body of bodyBytes, what the answer needs besides its
// listed problems: the four counts (none above received) and a summary entry for each code the
// lists may have to count (errorCodes and warningCodes: every code that occurs in each list; no
// count above problems, the number of problems of both lists).
func newAnswer(bodyBytes, received, problems int, errorCodes, warningCodes []string) *answer {
	fixed := len(`{"accepted":,"duplicates":,"errors":[],"received":,"rejected":,"warnings":[]}`+"\n") +
		4*len(strconv.Itoa(received))
	for _, codes := range [][]string{errorCodes, warningCodes} {
		if len(codes) == 0 {
			continue
		}
		fixed += len(`,"warnings_omitted":[]`)
		for _, code := range codes {
			fixed += len(`{"code":,"count":},`) + jsonStringLen(code) + len(strconv.Itoa(problems))
		}
	}
	return &answer{budget: max(AnswerLimit(bodyBytes)-fixed, 0)}
}

// add lists p for the event at index in l, or counts it when l has stopped or p does not fit.
func (a *answer) add(l *problemList, index int, p trackapi.Problem) {
	if !l.stopped {
		if n := problemBytes(index, p); len(l.listed) < MaxListedProblems && n <= a.budget {
			a.budget -= n
			l.listed = append(l.listed, gen.Problem{Index: index, Code: gen.ProblemCode(p.Code), Path: p.Path, Message: p.Message})
			return
		}
		l.stopped = true
	}
	l.count(gen.ProblemCode(p.Code), 1)
}

// addRun adds the same problem for the n events from index on: what a request-level rejection
// does to every event, in time that does not grow with n once the list has stopped.
func (a *answer) addRun(l *problemList, index, n int, p trackapi.Problem) {
	i := 0
	for ; i < n && !l.stopped; i++ {
		a.add(l, index+i, p)
	}
	if i < n {
		l.count(gen.ProblemCode(p.Code), n-i)
	}
}

func (l *problemList) count(code gen.ProblemCode, n int) {
	for i := range l.omitted {
		if l.omitted[i].Code == code {
			l.omitted[i].Count += n
			return
		}
	}
	l.omitted = append(l.omitted, gen.ProblemCount{Code: code, Count: n})
}

// fill puts the lists into result.
func (a *answer) fill(result *gen.CollectResult) {
	result.Errors, result.Warnings = a.errors.listed, a.warnings.listed
	if result.Errors == nil {
		result.Errors = []gen.Problem{}
	}
	if result.Warnings == nil {
		result.Warnings = []gen.Problem{}
	}
	if len(a.errors.omitted) > 0 {
		result.ErrorsOmitted = &a.errors.omitted
	}
	if len(a.warnings.omitted) > 0 {
		result.WarningsOmitted = &a.warnings.omitted
	}
}

// problemBytes is what one listed problem adds to the answer, its separating comma included.
func problemBytes(index int, p trackapi.Problem) int {
	return len(`{"code":,"index":,"message":,"path":},`) + jsonStringLen(p.Code) + len(strconv.Itoa(index)) +
		jsonStringLen(p.Message) + jsonStringLen(p.Path)
}

// jsonStringLen is the length of s encoded as a JSON string by encoding/json with HTML escaping on
// (as Echo's c.JSON does), quotes included; an upper bound for encoders that escape less.
func jsonStringLen(s string) int {
	n := 2
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			switch {
			case b == '"' || b == '\\' || b == '\n' || b == '\r' || b == '\t':
				n += 2
			case b < 0x20 || b == '<' || b == '>' || b == '&':
				n += 6 // \u00XX (\b and \f count as such too: an upper bound)
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r == '\u2028' || r == '\u2029' {
			n += 6 // \ufffd for invalid UTF-8, \u2028 and \u2029 escaped
		} else {
			n += size
		}
		i += size
	}
	return n
}

// addCode adds code to codes unless it is there.
func addCode(codes []string, code string) []string {
	for _, c := range codes {
		if c == code {
			return codes
		}
	}
	return append(codes, code)
}

// ProblemCounts counts a 200's problems by code, listed and omitted together: what its metrics
// count (a list no longer holds every problem). rejected sums to result.Rejected.
func ProblemCounts(result gen.CollectResult) (rejected, warnings map[string]int) {
	count := func(listed []gen.Problem, omitted *[]gen.ProblemCount) map[string]int {
		if len(listed) == 0 && omitted == nil {
			return nil
		}
		m := make(map[string]int)
		for _, p := range listed {
			m[string(p.Code)]++
		}
		if omitted != nil {
			for _, c := range *omitted {
				m[string(c.Code)] += c.Count
			}
		}
		return m
	}
	return count(result.Errors, result.ErrorsOmitted), count(result.Warnings, result.WarningsOmitted)
}
