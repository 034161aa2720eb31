package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// dependencyResult is one entry of FACTORY_DEPENDENCY_RESULTS: a
// dependency's result as JSON (null when it has none or it was omitted
// from the claim), with what names it.
type dependencyResult struct {
	TaskID string          `json:"task_id"`
	Stage  string          `json:"stage,omitempty"`
	Kind   string          `json:"kind,omitempty"`
	Title  string          `json:"title,omitempty"`
	Result json.RawMessage `json:"result"`
	// Omitted says the result did not fit in the claim: fetch it with
	// "factory task show" while holding the task.
	Omitted bool `json:"omitted,omitempty"`
	// Withheld says the dependency was done before this task was made,
	// so its result is not handed on.
	Withheld bool `json:"withheld,omitempty"`
}

// dependencyResultsJSON renders a task's dependency results as CMD gets
// them in FACTORY_DEPENDENCY_RESULTS: "[]" when there are none.
func dependencyResultsJSON(t *factoryv1.Task) string {
	out := make([]dependencyResult, 0, len(t.GetDependencyResults()))
	for _, d := range t.GetDependencyResults() {
		r := dependencyResult{TaskID: d.GetTaskId(), Stage: d.GetStage(), Kind: d.GetKind(), Title: d.GetTitle(), Omitted: d.GetOmitted(), Withheld: d.GetWithheld()}
		if d.GetResultJson() != "" && json.Valid([]byte(d.GetResultJson())) {
			r.Result = json.RawMessage(d.GetResultJson())
		}
		out = append(out, r)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "[]"
	}
	return string(b)
}

// dependencyResultsEnv is dependencyResultsJSON, or empty when it is too
// large for an environment string (CMD then reads stdin).
func dependencyResultsEnv(t *factoryv1.Task) string {
	s := dependencyResultsJSON(t)
	if len(s) > workPayloadEnvMax {
		return ""
	}
	return s
}

// dependencyResultText is one dependency's result on a line of task show.
func dependencyResultText(d *factoryv1.DependencyResult) string {
	name := d.GetTaskId()
	if s := d.GetStage(); s != "" {
		name += " (" + s + ")"
	}
	switch {
	case d.GetWithheld():
		return name + ": withheld (done before this task was created)"
	case d.GetOmitted():
		return fmt.Sprintf("%s: %d bytes, not in this response", name, d.GetResultBytes())
	case d.GetResultJson() == "":
		return name + ": none"
	}
	return name + ": " + truncate(d.GetResultJson(), 200)
}

// resultFlag reads a --result flag: JSON, or @FILE holding it; compacted.
func resultFlag(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	if name, ok := strings.CutPrefix(v, "@"); ok {
		b, err := os.ReadFile(name)
		if err != nil {
			return "", usageErrorf("--result: %v", err)
		}
		v = string(b)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(v)); err != nil {
		return "", usageErrorf("--result: not JSON: %v", err)
	}
	if compact.Len() > workResultMax {
		return "", usageErrorf("--result: %d bytes of JSON; at most %d", compact.Len(), workResultMax)
	}
	return compact.String(), nil
}
