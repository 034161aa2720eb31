package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// The runbook's file queue is a directory with one folder per state and
// one JSON file per task: DIR/<folder>/<task-id>.json. These functions
// translate between that layout and the API, without any network, so the
// rules (which folder, which fields, what happens to unknown fields, what
// order to create in) are tested on their own.

// fileTask is the JSON written for each task on export. Field names are the
// API's; the payload is nested JSON rather than JSON text so files stay
// readable and editable.
type fileTask struct {
	ID           string            `json:"id"`
	Title        string            `json:"title"`
	Kind         string            `json:"kind"`
	Role         string            `json:"role"`
	Assignee     string            `json:"assignee"`
	Priority     int32             `json:"priority"`
	MaxAttempts  int32             `json:"max_attempts"`
	Attempt      int32             `json:"attempt"`
	DependsOn    []string          `json:"depends_on"`
	Labels       map[string]string `json:"labels"`
	LastError    string            `json:"last_error"`
	Progress     string            `json:"progress"`
	Note         string            `json:"note"`
	CreatedAt    string            `json:"created_at"`
	ApprovalTier int32             `json:"approval_tier,omitempty"`
	Payload      json.RawMessage   `json:"payload"`
}

// settableFields map to CreateTaskRequest fields on import. attempt,
// last_error and progress are the task's history, which only an operator
// may set (an import).
var settableFields = map[string]bool{
	"id": true, "title": true, "kind": true, "role": true, "assignee": true,
	"priority": true, "max_attempts": true, "depends_on": true, "labels": true,
	"approval_tier": true, "payload": true, "payload_json": true,
	"attempt": true, "last_error": true, "progress": true,
}

// historyFields are task fields the server owns (notes, times, the lease,
// the state itself, which the folder gives). The API cannot set them, so an
// import drops them, and says so (importItem.Dropped); they are not
// unknown, so they do not go into the payload either.
var historyFields = map[string]bool{
	"note": true, "created_at": true, "updated_at": true, "state_changed_at": true,
	"state": true, "lease": true, "run_after": true,
}

// Bounds of a task's history, as CreateTaskRequest takes it.
const (
	maxImportAttempt   = 100
	maxLastErrorBytes  = 65536
	maxProgressRunes   = 4096
	defaultMaxAttempts = 3
)

// folderOf is the file-queue folder for a state.
func folderOf(s factoryv1.TaskState) string { return stateName(s) }

// taskToFile converts a task for export.
func taskToFile(t *factoryv1.Task) (fileTask, error) {
	payload := json.RawMessage(`{}`)
	if p := strings.TrimSpace(t.GetPayloadJson()); p != "" {
		if !json.Valid([]byte(p)) {
			return fileTask{}, fmt.Errorf("task %s: payload is not valid JSON", t.GetId())
		}
		payload = json.RawMessage(p)
	}
	deps := t.GetDependsOn()
	if deps == nil {
		deps = []string{}
	}
	labels := t.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	created := ""
	if t.GetCreatedAt() != nil {
		created = t.GetCreatedAt().AsTime().UTC().Format(time.RFC3339Nano)
	}
	return fileTask{
		ID: t.GetId(), Title: t.GetTitle(), Kind: t.GetKind(), Role: t.GetRole(), Assignee: t.GetAssignee(),
		Priority: t.GetPriority(), MaxAttempts: t.GetMaxAttempts(), Attempt: t.GetAttempt(),
		DependsOn: deps, Labels: labels, LastError: t.GetLastError(), Progress: t.GetProgress(), Note: t.GetNote(),
		CreatedAt: created, ApprovalTier: t.GetApprovalTier(), Payload: payload,
	}, nil
}

// checkExportDir refuses a directory that already holds task files, so an
// export never mixes with an older one.
func checkExportDir(dir string) error {
	for _, folder := range stateNames {
		entries, err := os.ReadDir(filepath.Join(dir, folder))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".json") {
				return fmt.Errorf("%s already holds task files: export into an empty directory", filepath.Join(dir, folder))
			}
		}
	}
	return nil
}

// writeExportFile writes one task into its state's folder.
func writeExportFile(dir string, t *factoryv1.Task) (string, error) {
	ft, err := taskToFile(t)
	if err != nil {
		return "", err
	}
	if !safeFileID(t.GetId()) {
		return "", fmt.Errorf("task id %q cannot be a file name", t.GetId())
	}
	b, err := json.MarshalIndent(ft, "", "  ")
	if err != nil {
		return "", err
	}
	folder := folderOf(t.GetState())
	path := filepath.Join(dir, folder, t.GetId()+".json")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return "", err
	}
	return folder, nil
}

// safeFileID guards against ids that would escape their folder.
func safeFileID(id string) bool {
	return id != "" && !strings.ContainsAny(id, `/\`) && id != "." && id != ".."
}

// importItem is one task file read for import.
type importItem struct {
	File   string // path, for error messages
	Folder string
	Req    *factoryv1.CreateTaskRequest
	// MergedFields are the unknown top-level fields moved into the payload.
	MergedFields []string
	// Dropped are the fields with a value that the import cannot keep
	// (historyFields but state, which the folder gives), sorted.
	Dropped []string
}

// hasHistory reports whether the file brings attempt, last error or
// progress along.
func (it *importItem) hasHistory() bool {
	return it.Req.GetAttempt() != 0 || it.Req.GetLastError() != "" || it.Req.GetProgress() != ""
}

// initialStateFor maps a folder to the state a task is created in. READY
// and IN_PROGRESS are left unset: the server makes the task READY, or
// BACKLOG while a dependency is not DONE. An in-progress task cannot keep
// its lease (its holder has no token from this server), so it is requeued.
func initialStateFor(folder string) (factoryv1.TaskState, error) {
	st, err := parseState(folder)
	if err != nil {
		return 0, err
	}
	switch st {
	case factoryv1.TaskState_TASK_STATE_READY, factoryv1.TaskState_TASK_STATE_IN_PROGRESS:
		return factoryv1.TaskState_TASK_STATE_UNSPECIFIED, nil
	}
	return st, nil
}

// parseTaskFile reads one task file. The folder gives the state; the file
// name (without .json) gives the id unless the file has an "id"; known
// fields become CreateTaskRequest fields; any other top-level field is kept
// by merging it into the payload object.
func parseTaskFile(folder, path string, data []byte) (*importItem, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...))
	}
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&fields); err != nil {
		return nil, fail("not a JSON object: %v", err)
	}
	if fields == nil {
		return nil, fail("not a JSON object")
	}
	state, err := initialStateFor(folder)
	if err != nil {
		return nil, fail("%v", err)
	}
	req := &factoryv1.CreateTaskRequest{InitialState: state}
	item := &importItem{File: path, Folder: folder, Req: req}

	// Fields holding JSON null count as absent.
	for k, v := range fields {
		if string(bytes.TrimSpace(v)) == "null" {
			delete(fields, k)
		}
	}
	str := func(key string, dst *string) error {
		if raw, ok := fields[key]; ok {
			if err := json.Unmarshal(raw, dst); err != nil {
				return fail("%s: want a string", key)
			}
		}
		return nil
	}
	num := func(key string, dst *int32) error {
		if raw, ok := fields[key]; ok {
			if err := json.Unmarshal(raw, dst); err != nil {
				return fail("%s: want a whole number", key)
			}
		}
		return nil
	}
	for key, dst := range map[string]*string{"id": &req.TaskId, "title": &req.Title, "kind": &req.Kind, "role": &req.Role, "assignee": &req.Assignee,
		"last_error": &req.LastError, "progress": &req.Progress} {
		if err := str(key, dst); err != nil {
			return nil, err
		}
	}
	for key, dst := range map[string]*int32{"priority": &req.Priority, "max_attempts": &req.MaxAttempts, "approval_tier": &req.ApprovalTier, "attempt": &req.Attempt} {
		if err := num(key, dst); err != nil {
			return nil, err
		}
	}
	if err := checkHistory(req); err != nil {
		return nil, fail("%v", err)
	}
	if raw, ok := fields["depends_on"]; ok {
		if err := json.Unmarshal(raw, &req.DependsOn); err != nil {
			return nil, fail("depends_on: want a list of task ids")
		}
	}
	if raw, ok := fields["labels"]; ok {
		if err := json.Unmarshal(raw, &req.Labels); err != nil {
			return nil, fail("labels: want an object of strings")
		}
	}
	if req.TaskId == "" {
		req.TaskId = strings.TrimSuffix(filepath.Base(path), ".json")
	}
	if strings.TrimSpace(req.Title) == "" {
		return nil, fail("no title")
	}

	payload, err := filePayload(fields)
	if err != nil {
		return nil, fail("%v", err)
	}
	unknown := map[string]json.RawMessage{}
	for k, v := range fields {
		if !settableFields[k] && !historyFields[k] {
			unknown[k] = v
		}
	}
	if len(unknown) > 0 {
		if payload, err = mergeIntoPayload(payload, unknown); err != nil {
			return nil, fail("%v", err)
		}
		for k := range unknown {
			item.MergedFields = append(item.MergedFields, k)
		}
		sort.Strings(item.MergedFields)
	}
	req.PayloadJson = string(payload)
	for k, v := range fields {
		if historyFields[k] && k != "state" && !emptyJSON(v) {
			item.Dropped = append(item.Dropped, k)
		}
	}
	sort.Strings(item.Dropped)
	return item, nil
}

// checkHistory checks a file's attempt, last error and progress against
// what CreateTaskRequest takes, so that a bad one is named with its file.
func checkHistory(req *factoryv1.CreateTaskRequest) error {
	limit := req.GetMaxAttempts()
	if limit == 0 {
		limit = defaultMaxAttempts
	}
	switch {
	case req.GetAttempt() < 0 || req.GetAttempt() > maxImportAttempt:
		return fmt.Errorf("attempt: want 0 to %d, got %d", maxImportAttempt, req.GetAttempt())
	case req.GetAttempt() > limit:
		return fmt.Errorf("attempt %d is more than max_attempts %d", req.GetAttempt(), limit)
	case len(req.GetLastError()) > maxLastErrorBytes:
		return fmt.Errorf("last_error: at most %d bytes, got %d", maxLastErrorBytes, len(req.GetLastError()))
	case utf8.RuneCountInString(req.GetProgress()) > maxProgressRunes:
		return fmt.Errorf("progress: at most %d characters, got %d", maxProgressRunes, utf8.RuneCountInString(req.GetProgress()))
	}
	return nil
}

// emptyJSON reports whether a field's value holds nothing: "", 0, false,
// {} or [] (export writes every field, empty or not).
func emptyJSON(v json.RawMessage) bool {
	switch strings.Join(strings.Fields(string(v)), "") {
	case `""`, "0", "false", "{}", "[]", "null":
		return true
	}
	return false
}

// filePayload returns the task's payload as compact JSON text: the nested
// "payload" value, or "payload_json" text, or nil when neither is there.
func filePayload(fields map[string]json.RawMessage) ([]byte, error) {
	raw, nested := fields["payload"]
	text, hasText := fields["payload_json"]
	if nested && hasText {
		return nil, errors.New(`both "payload" and "payload_json": keep one`)
	}
	if hasText {
		var s string
		if err := json.Unmarshal(text, &s); err != nil {
			return nil, errors.New("payload_json: want JSON text in a string")
		}
		if strings.TrimSpace(s) == "" {
			return nil, nil
		}
		if !json.Valid([]byte(s)) {
			return nil, errors.New("payload_json: not valid JSON")
		}
		raw = json.RawMessage(s)
	} else if !nested {
		return nil, nil
	}
	var out bytes.Buffer
	if err := json.Compact(&out, raw); err != nil {
		return nil, fmt.Errorf("payload: %v", err)
	}
	return out.Bytes(), nil
}

// mergeIntoPayload adds unknown fields to the payload object (creating it
// when there is none). A payload that is not an object, or a field the
// payload already has, cannot be merged without losing data, so both are
// errors.
func mergeIntoPayload(payload []byte, unknown map[string]json.RawMessage) ([]byte, error) {
	obj := map[string]json.RawMessage{}
	if len(payload) > 0 {
		if err := json.Unmarshal(payload, &obj); err != nil || obj == nil {
			keys := make([]string, 0, len(unknown))
			for k := range unknown {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			return nil, fmt.Errorf("fields %s are not task fields and the payload is not an object to keep them in", strings.Join(keys, ", "))
		}
	}
	for k, v := range unknown {
		if _, clash := obj[k]; clash {
			return nil, fmt.Errorf("field %q is both at the top level and in the payload", k)
		}
		obj[k] = v
	}
	return json.Marshal(obj)
}

// importProblems are what is wrong with the files of one import, each
// naming its file. An import with any creates nothing.
type importProblems []string

func (ps importProblems) Error() string {
	sorted := slices.Clone(ps)
	sort.Strings(sorted)
	return fmt.Sprintf("%d problem(s) in the task files, so nothing was imported; fix them and run the import again:\n  %s",
		len(ps), strings.Join(sorted, "\n  "))
}

// readFileQueue reads every task file under dir's state folders. Files not
// ending in .json are skipped and reported. A file that cannot be read or
// parsed, or repeats another's id, is a problem: every one is collected,
// so one run names them all. err is for the directory itself.
func readFileQueue(dir string) (items []*importItem, skipped []string, problems importProblems, err error) {
	found := false
	byID := map[string]string{}
	for _, folder := range stateNames {
		sub := filepath.Join(dir, folder)
		entries, err := os.ReadDir(sub)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, nil, err
		}
		found = true
		for _, e := range entries {
			path := filepath.Join(sub, e.Name())
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
				skipped = append(skipped, path)
				continue
			}
			data, err := os.ReadFile(path)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", path, err))
				continue
			}
			item, err := parseTaskFile(folder, path, data)
			if err != nil {
				problems = append(problems, err.Error())
				continue
			}
			if other, dup := byID[item.Req.TaskId]; dup {
				problems = append(problems, fmt.Sprintf("%s: id %s is also the id of %s", path, item.Req.TaskId, other))
				continue
			}
			byID[item.Req.TaskId] = path
			items = append(items, item)
		}
	}
	if !found {
		return nil, nil, nil, fmt.Errorf("%s has none of the queue folders (%s)", dir, strings.Join(stateNames, ", "))
	}
	return items, skipped, problems, nil
}

// orderForImport arranges items in waves: every task's dependencies are in
// an earlier wave or already on the server, so each wave can be created in
// batches in any order. exists reports whether an id is on the server; it
// is asked only about dependencies outside the import. Within a wave the
// order is folder then file, so imports are repeatable. A dependency on
// nothing and a cycle are problems, all of them collected; err is only
// exists failing.
func orderForImport(items []*importItem, exists func(id string) (bool, error)) ([][]*importItem, importProblems, error) {
	var problems importProblems
	byID := make(map[string]*importItem, len(items))
	for _, it := range items {
		byID[it.Req.TaskId] = it
	}
	pending := make(map[string]int, len(items)) // unmet in-import dependencies
	dependents := map[string][]string{}
	for _, it := range items {
		seen := map[string]bool{}
		for _, dep := range it.Req.GetDependsOn() {
			if seen[dep] {
				continue
			}
			seen[dep] = true
			if _, ok := byID[dep]; ok {
				pending[it.Req.TaskId]++
				dependents[dep] = append(dependents[dep], it.Req.TaskId)
				continue
			}
			ok, err := exists(dep)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: checking dependency %s: %w", it.File, dep, err)
			}
			if !ok {
				problems = append(problems, fmt.Sprintf("%s: depends on %s, which is neither in the import nor on the server", it.File, dep))
			}
		}
	}
	var waves [][]*importItem
	var wave []*importItem
	for _, it := range items {
		if pending[it.Req.TaskId] == 0 {
			wave = append(wave, it)
		}
	}
	placed := 0
	for len(wave) > 0 {
		sortItems(wave)
		waves = append(waves, wave)
		placed += len(wave)
		var next []*importItem
		for _, it := range wave {
			for _, d := range dependents[it.Req.TaskId] {
				pending[d]--
				if pending[d] == 0 {
					next = append(next, byID[d])
				}
			}
		}
		wave = next
	}
	if placed < len(items) {
		var cyclic []string
		for _, it := range items {
			if pending[it.Req.TaskId] > 0 {
				cyclic = append(cyclic, it.File)
			}
		}
		sort.Strings(cyclic)
		problems = append(problems, fmt.Sprintf("dependency cycle among: %s", strings.Join(cyclic, ", ")))
	}
	if len(problems) > 0 {
		return nil, problems, nil
	}
	return waves, nil, nil
}

func sortItems(items []*importItem) {
	folderRank := map[string]int{}
	for i, f := range stateNames {
		folderRank[f] = i
	}
	sort.Slice(items, func(i, j int) bool {
		if a, b := folderRank[items[i].Folder], folderRank[items[j].Folder]; a != b {
			return a < b
		}
		return items[i].File < items[j].File
	})
}
