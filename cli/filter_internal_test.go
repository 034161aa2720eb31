package cli

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
)

// Every term of the filter syntax, and its round trip through formatFilter.
func TestParseFilterTerms(t *testing.T) {
	for in, want := range map[string]string{
		"state=ready":                   `{"states":["TASK_STATE_READY"]}`,
		"state=ready|in-progress":       `{"states":["TASK_STATE_READY","TASK_STATE_IN_PROGRESS"]}`,
		"role=builder,agent=forge":      `{"role":"builder","agent":"forge"}`,
		"kind=build":                    `{"kind":"build"}`,
		"tier=frontier":                 `{"tier":"frontier"}`,
		"label:team=web,label:env=prod": `{"labels":["team=web","env=prod"]}`,
		"priority<=0":                   `{"maxPriority":0}`,
		"priority<0":                    `{"maxPriority":-1}`,
		"priority>=5":                   `{"minPriority":5}`,
		"priority>5":                    `{"minPriority":6}`,
		"priority=3":                    `{"minPriority":3,"maxPriority":3}`,
		"attempt>=3":                    `{"minAttempt":3}`,
		"attempt>3":                     `{"minAttempt":4}`,
		"age>1h":                        `{"minAge":"3600s"}`,
		"age>2d":                        `{"minAge":"172800s"}`,
		"state-age>=30m":                `{"minStateAge":"1800s"}`,
		" role = builder , ":            `{"role":"builder"}`,
	} {
		f, err := parseFilter([]string{in})
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		got, _ := protojson.Marshal(f)
		if strings.ReplaceAll(string(got), " ", "") != want {
			t.Errorf("%q parsed to %s, want %s", in, got, want)
		}
		back, err := parseFilter([]string{formatFilter(f)})
		if err != nil {
			t.Errorf("%q: formatFilter gave %q, which does not parse: %v", in, formatFilter(f), err)
			continue
		}
		if again, _ := protojson.Marshal(back); string(again) != string(got) {
			t.Errorf("%q: round trip through %q gave %s", in, formatFilter(f), again)
		}
	}
	if d, err := parseAge("90s"); err != nil || d != 90*time.Second {
		t.Errorf("parseAge(90s) = %s, %v", d, err)
	}
	for in, want := range map[string]string{
		"bogus":           "want KEY=VALUE",
		"color=red":       `unknown key "color"`,
		"role>x":          "role takes =",
		"role=a,role=b":   "role given twice",
		"priority<=high":  "not a whole number",
		"priority>=2000":  "from -1000 to 1000",
		"attempt=3":       "attempt takes >= or >",
		"age<1h":          "age takes >",
		"age>-1h":         "not a span",
		"label:=x":        "want label:KEY=VALUE",
		"state=sleeping":  "unknown state",
		"state=":          "state needs a value",
		"state-age>never": "not a span",
	} {
		_, err := parseFilter([]string{"kind=ok," + in})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "term ") {
			t.Errorf("%q: error %v, want one naming the term and saying %q", in, err, want)
		}
	}
}
