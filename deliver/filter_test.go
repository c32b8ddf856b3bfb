package deliver

import (
	"strings"
	"testing"
)

const sampleEvent = `{"event_name":"page_view","page_type":"home","value":12.5,"qty":3,"flag":true,"empty":"",
"list":["a","b",7],"none":[],"obj":{},"nil":null,"url":"https://shop.example/p/1?x=1",
"user":{"consistent_anonymous_id":"v1","consent_categories":["1",3]},"a/b":{"c~d":"slash-tilde"}}`

// Every operator, on present, missing, null, array and nested values.
func TestConditionOperators(t *testing.T) {
	event := decodeJSON([]byte(sampleEvent))
	tests := []struct {
		cond string
		want bool
	}{
		{`{"path":"/page_type","op":"is","value":"home"}`, true},
		{`{"path":"/page_type","op":"is","value":"cart"}`, false},
		{`{"path":"/missing","op":"is","value":"home"}`, false},
		{`{"path":"/value","op":"is","value":12.5}`, true},
		{`{"path":"/value","op":"is","value":"12.5"}`, true},
		{`{"path":"/qty","op":"is","value":3}`, true},
		{`{"path":"/flag","op":"is","value":true}`, true},
		{`{"path":"/page_type","op":"is_not","value":"cart"}`, true},
		{`{"path":"/page_type","op":"is_not","value":"home"}`, false},
		{`{"path":"/missing","op":"is_not","value":"home"}`, true},
		{`{"path":"/url","op":"contains","value":"shop.example"}`, true},
		{`{"path":"/url","op":"contains","value":"other"}`, false},
		{`{"path":"/list","op":"contains","value":"b"}`, true},
		{`{"path":"/list","op":"contains","value":7}`, true},
		{`{"path":"/list","op":"contains","value":"c"}`, false},
		{`{"path":"/user/consent_categories","op":"contains","value":"3"}`, true},
		{`{"path":"/url","op":"not_contains","value":"other"}`, true},
		{`{"path":"/list","op":"not_contains","value":"a"}`, false},
		{`{"path":"/missing","op":"not_contains","value":"a"}`, true},
		{`{"path":"/url","op":"starts_with","value":"https://"}`, true},
		{`{"path":"/url","op":"starts_with","value":"http://"}`, false},
		{`{"path":"/url","op":"ends_with","value":"x=1"}`, true},
		{`{"path":"/url","op":"ends_with","value":"x=2"}`, false},
		{`{"path":"/url","op":"matches","value":"^https://[a-z.]+/p/\\d+"}`, true},
		{`{"path":"/url","op":"matches","value":"^ftp:"}`, false},
		{`{"path":"/missing","op":"matches","value":".*"}`, false},
		{`{"path":"/url","op":"not_matches","value":"^ftp:"}`, true},
		{`{"path":"/url","op":"not_matches","value":"shop"}`, false},
		{`{"path":"/page_type","op":"exists"}`, true},
		{`{"path":"/nil","op":"exists"}`, false},
		{`{"path":"/missing","op":"exists"}`, false},
		{`{"path":"/missing","op":"not_exists"}`, true},
		{`{"path":"/nil","op":"not_exists"}`, true},
		{`{"path":"/page_type","op":"not_exists"}`, false},
		{`{"path":"/empty","op":"is_empty"}`, true},
		{`{"path":"/none","op":"is_empty"}`, true},
		{`{"path":"/obj","op":"is_empty"}`, true},
		{`{"path":"/nil","op":"is_empty"}`, true},
		{`{"path":"/missing","op":"is_empty"}`, true},
		{`{"path":"/page_type","op":"is_empty"}`, false},
		{`{"path":"/qty","op":"is_empty"}`, false},
		{`{"path":"/user/consistent_anonymous_id","op":"is","value":"v1"}`, true},
		{`{"path":"/list/1","op":"is","value":"b"}`, true},
		{`{"path":"/list/9","op":"exists"}`, false},
		{`{"path":"/list/01","op":"exists"}`, false},
		{`{"path":"/a~1b/c~0d","op":"is","value":"slash-tilde"}`, true},
		{`{"path":"/user","op":"is","value":"v1"}`, false}, // an object is no scalar
	}
	for _, tt := range tests {
		f, err := ParseFilter([]byte(`{"conditions":[` + tt.cond + `]}`))
		if err != nil {
			t.Errorf("%s: %v", tt.cond, err)
			continue
		}
		if got := f.passesConditions(event); got != tt.want {
			t.Errorf("%s: %t, want %t", tt.cond, got, tt.want)
		}
	}
}

// All conditions must hold, and the name lists apply before them.
func TestFilterCombines(t *testing.T) {
	f, err := ParseFilter([]byte(`{"event_names":["page_view","purchase"],"exclude_event_names":["purchase"],
		"conditions":[{"path":"/page_type","op":"is","value":"home"},{"path":"/qty","op":"exists"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	event := decodeJSON([]byte(sampleEvent))
	if !f.passesNames("page_view") || f.passesNames("purchase") || f.passesNames("search") {
		t.Error("event name lists")
	}
	if !f.passesConditions(event) {
		t.Error("both conditions hold")
	}
	f.Conditions[1].Op = OpNotExists
	if f.passesConditions(event) {
		t.Error("one condition failing must fail the filter")
	}
	if f, err := ParseFilter(nil); f != nil || err != nil {
		t.Errorf("no filter: %v %v", f, err)
	}
}

// A malformed filter is refused with a message that says what is wrong.
func TestMalformedFilters(t *testing.T) {
	for raw, want := range map[string]string{
		`{`:                    "unexpected EOF",
		`[]`:                   "cannot unmarshal array",
		`{"event_name":["x"]}`: `unknown field "event_name"`,
		`{"conditions":[{"path":"page_type","op":"is","value":"x"}]}`:    "must be a JSON pointer",
		`{"conditions":[{"path":"/a","op":"equals","value":"x"}]}`:       `unknown op "equals"`,
		`{"conditions":[{"path":"/a","op":"is"}]}`:                       "needs a value",
		`{"conditions":[{"path":"/a","op":"is","value":null}]}`:          "needs a value",
		`{"conditions":[{"path":"/a","op":"is","value":{"x":1}}]}`:       "must be a string, a number or a boolean",
		`{"conditions":[{"path":"/a","op":"exists","value":"x"}]}`:       "takes no value",
		`{"conditions":[{"path":"/a","op":"matches","value":"(["}]}`:     "missing closing",
		`{"conditions":[{"path":"/a","op":"is","value":"x","extra":1}]}`: `unknown field "extra"`,
		`{} {}`: "unexpected data",
		`{"conditions":[` + strings.Repeat(`{"path":"/a","op":"exists"},`, 50) + `{"path":"/a","op":"exists"}]}`: "at most 50 conditions",
	} {
		_, err := ParseFilter([]byte(raw))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.60s: %v, want an error with %q", raw, err, want)
		}
	}
}

// Consent: strings and numbers compared as strings; no categories is no consent.
func TestConsent(t *testing.T) {
	for _, tt := range []struct {
		event, category string
		want            bool
	}{
		{`{"user":{"consent_categories":["1","3"]}}`, "3", true},
		{`{"user":{"consent_categories":[1,3]}}`, "3", true},
		{`{"user":{"consent_categories":["1",3]}}`, "1", true},
		{`{"user":{"consent_categories":["1","3"]}}`, "2", false},
		{`{"user":{"consent_categories":[]}}`, "1", false},
		{`{"user":{}}`, "1", false},
		{`{}`, "1", false},
		{`{"user":{"consent_categories":"1"}}`, "1", false}, // not a list
		{`{"user":{"consent_categories":[{"id":1}]}}`, "1", false},
	} {
		if got := hasConsent(decodeJSON([]byte(tt.event)), tt.category); got != tt.want {
			t.Errorf("%s with %q: %t, want %t", tt.event, tt.category, got, tt.want)
		}
	}
}
