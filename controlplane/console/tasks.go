package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// taskPageSize is the task list's page: enough to scan, small enough for a
// phone.
const taskPageSize = 50

// historyPageSize bounds the audit entries a task page shows at once.
const historyPageSize = 50

// What a task page shows of its large text fields inline: a payload may be
// 1 MiB and a last error 64 KiB, and a page stays under 200 KB even when
// escaping turns every byte shown into a five-byte entity (&#34;). The
// whole payload is one link away.
const (
	shownPayloadBytes = 24 << 10
	shownErrorBytes   = 8 << 10
	shownNoteBytes    = 4 << 10
)

func (s *Server) routeTasks(mux *http.ServeMux) {
	mux.Handle("GET /tasks", s.page(s.tasksPage))
	mux.Handle("GET /tasks/{id}", s.page(s.taskPage))
	mux.Handle("GET /tasks/{id}/payload", s.page(s.taskPayload))
	mux.Handle("POST /tasks/{id}/move", s.action(s.moveTask))
	mux.Handle("POST /tasks/{id}/requeue", s.action(s.requeueTask))
	mux.Handle("POST /tasks/{id}/kill", s.action(s.killTask))
	mux.Handle("POST /tasks/{id}/priority", s.action(s.setTaskPriority))
	mux.Handle("POST /queue/pause", s.action(s.pauseQueue))
	mux.Handle("POST /queue/resume", s.action(s.resumeQueue))
}

// taskFilter is the task list's query string: what the filter form
// submits and what the pager and label links carry on.
type taskFilter struct {
	States     []factoryv1.TaskState
	Role       string
	Agent      string   // an assignee or a lease holder
	Labels     []string // "key=value", all of which a task must carry
	Kind       string
	MinAttempt int32
	// MinAttemptText is min_attempt as typed, so a value that is not a
	// number is shown back for correcting.
	MinAttemptText string
	// Oldest lists the oldest task first (order=oldest); the list is
	// newest first by default, the latest work on the first page.
	Oldest    bool
	PageToken string
}

// The list's orders, as order= in the query.
const (
	orderNewest = "newest"
	orderOldest = "oldest"
)

// parseTaskFilter reads the list's query. Only the parsing is checked here
// (a state name, a number); the API checks the rest and names the field.
func parseTaskFilter(q url.Values) (taskFilter, error) {
	f := taskFilter{
		Role:           strings.TrimSpace(q.Get("role")),
		Agent:          strings.TrimSpace(q.Get("agent")),
		Kind:           strings.TrimSpace(q.Get("kind")),
		MinAttemptText: strings.TrimSpace(q.Get("min_attempt")),
		PageToken:      q.Get("page_token"),
	}
	switch o := strings.ToLower(strings.TrimSpace(q.Get("order"))); o {
	case "", orderNewest:
	case orderOldest:
		f.Oldest = true
	default:
		return f, status.Errorf(codes.InvalidArgument, "order: %q is not %s or %s", o, orderNewest, orderOldest)
	}
	for _, l := range q["label"] {
		if l = strings.TrimSpace(l); l != "" {
			f.Labels = append(f.Labels, l)
		}
	}
	for _, name := range q["state"] {
		st, ok, err := parseTaskState(name)
		if err != nil {
			return f, err
		}
		if ok && !slices.Contains(f.States, st) {
			f.States = append(f.States, st)
		}
	}
	if f.MinAttemptText != "" {
		n, err := strconv.ParseInt(f.MinAttemptText, 10, 32)
		if err != nil {
			return f, status.Error(codes.InvalidArgument, "min_attempt: not a number")
		}
		f.MinAttempt = int32(n)
	}
	return f, nil
}

// parseTaskState reads a state as the list's links and the CLI write it:
// READY, ready, in-progress or TASK_STATE_READY. Empty and "any" are no
// filter (ok false).
func parseTaskState(name string) (factoryv1.TaskState, bool, error) {
	n := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(name), "-", "_"))
	if n == "" || n == "ANY" {
		return 0, false, nil
	}
	v, found := factoryv1.TaskState_value["TASK_STATE_"+strings.TrimPrefix(n, "TASK_STATE_")]
	if !found || v == 0 {
		names := make([]string, len(stateOrder))
		for i, st := range stateOrder {
			names[i] = enumName(st)
		}
		return 0, false, status.Errorf(codes.InvalidArgument, "state: unknown state %q (want one of %s)", name, strings.Join(names, ", "))
	}
	return factoryv1.TaskState(v), true, nil
}

// request is the filter as a ListTasks call for one page.
func (f taskFilter) request() *factoryv1.ListTasksRequest {
	return &factoryv1.ListTasksRequest{
		States:      f.States,
		Role:        f.Role,
		Assignee:    f.Agent,
		Labels:      f.Labels,
		Kind:        f.Kind,
		MinAttempt:  f.MinAttempt,
		PageSize:    taskPageSize,
		PageToken:   f.PageToken,
		NewestFirst: !f.Oldest,
	}
}

// query is the filter and the order as a query string, without the page
// token. The default order is left out, so plain links stay plain.
func (f taskFilter) query() url.Values {
	q := f.filters()
	if f.Oldest {
		q.Set("order", orderOldest)
	}
	return q
}

// filters is the query's filters alone.
func (f taskFilter) filters() url.Values {
	q := url.Values{}
	for _, st := range f.States {
		q.Add("state", enumName(st))
	}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("role", f.Role)
	set("agent", f.Agent)
	set("kind", f.Kind)
	set("min_attempt", f.MinAttemptText)
	for _, l := range f.Labels {
		q.Add("label", l)
	}
	return q
}

// Filtered reports whether any filter is set; the order is not one.
func (f taskFilter) Filtered() bool { return len(f.filters()) > 0 }

// Order is the order the form's select shows.
func (f taskFilter) Order() string {
	if f.Oldest {
		return orderOldest
	}
	return orderNewest
}

// State is the state the form's select shows: the first filtered one.
func (f taskFilter) State() string {
	if len(f.States) == 0 {
		return ""
	}
	return enumName(f.States[0])
}

// LabelInputs are the label fields the form shows: one per label filtered
// on, and an empty one to add another.
func (f taskFilter) LabelInputs() []string {
	if len(f.Labels) >= 64 {
		return f.Labels
	}
	return append(slices.Clone(f.Labels), "")
}

func tasksHref(q url.Values) string {
	if len(q) == 0 {
		return "/tasks"
	}
	return "/tasks?" + q.Encode()
}

// tasksData is the task list page.
type tasksData struct {
	Filter taskFilter
	// FilterError is why the filter was refused (by the parser or the
	// API); the page then shows the form to correct it and no tasks.
	FilterError string
	Stats       *factoryv1.GetQueueStatsResponse
	Tasks       []*factoryv1.Task
	NextPage    string // the link to the page after this one; empty on the last
}

// States lists the queue's states for the counts and the filter's select.
func (tasksData) States() []factoryv1.TaskState { return stateOrder }

// Count is the number of tasks in a state.
func (d tasksData) Count(st factoryv1.TaskState) int64 {
	for _, c := range d.Stats.GetCounts() {
		if c.GetState() == st {
			return c.GetCount()
		}
	}
	return 0
}

// Total is the number of tasks in every state.
func (d tasksData) Total() int64 {
	var n int64
	for _, c := range d.Stats.GetCounts() {
		n += c.GetCount()
	}
	return n
}

// Showing reports whether the list is filtered to exactly this state, for
// the counts' highlight.
func (d tasksData) Showing(st factoryv1.TaskState) bool {
	return len(d.Filter.States) == 1 && d.Filter.States[0] == st
}

// WithLabel is the list's link with this label added to the filters.
func (d tasksData) WithLabel(k, v string) string {
	q := d.Filter.query()
	if l := k + "=" + v; !slices.Contains(q["label"], l) {
		q.Add("label", l)
	}
	return tasksHref(q)
}

// FirstPage is the list's first page under the same filters.
func (d tasksData) FirstPage() string { return tasksHref(d.Filter.query()) }

// tasksPage lists tasks with the queue's counts above them. The counts and
// the page are fetched together.
func (s *Server) tasksPage(rq *request) error {
	d := tasksData{}
	f, perr := parseTaskFilter(rq.r.URL.Query())
	d.Filter = f
	var (
		wg              sync.WaitGroup
		statsErr, lsErr error
		list            *factoryv1.ListTasksResponse
	)
	wg.Go(func() {
		d.Stats, statsErr = s.queue.GetQueueStats(rq.ctx, &factoryv1.GetQueueStatsRequest{})
	})
	if perr == nil {
		wg.Go(func() { list, lsErr = s.queue.ListTasks(rq.ctx, f.request()) })
	}
	wg.Wait()
	if statsErr != nil {
		return statsErr
	}
	code := http.StatusOK
	switch {
	case perr != nil:
		d.FilterError, code = message(perr), http.StatusBadRequest
	case status.Code(lsErr) == codes.InvalidArgument:
		// A filter the API refused: keep the form so it can be corrected.
		d.FilterError, code = message(lsErr), http.StatusBadRequest
	case lsErr != nil:
		return lsErr
	default:
		d.Tasks = list.GetTasks()
		if tok := list.GetNextPageToken(); tok != "" {
			q := f.query()
			q.Set("page_token", tok)
			d.NextPage = tasksHref(q)
		}
	}
	return s.render(rq, code, "tasks", view{Title: "Tasks", Nav: "tasks", Topics: "tasks"}, d)
}

// operatorMoves mirrors the queue's transition table for MoveTask, so a
// task page offers only the moves the API would take. The API stays the
// judge; TestOperatorMovesMirrorStore keeps the copy true.
var operatorMoves = map[factoryv1.TaskState][]factoryv1.TaskState{
	factoryv1.TaskState_TASK_STATE_BACKLOG:     {factoryv1.TaskState_TASK_STATE_READY, factoryv1.TaskState_TASK_STATE_PAUSED, factoryv1.TaskState_TASK_STATE_FAILED},
	factoryv1.TaskState_TASK_STATE_READY:       {factoryv1.TaskState_TASK_STATE_BACKLOG, factoryv1.TaskState_TASK_STATE_PAUSED, factoryv1.TaskState_TASK_STATE_FAILED},
	factoryv1.TaskState_TASK_STATE_IN_PROGRESS: {factoryv1.TaskState_TASK_STATE_READY, factoryv1.TaskState_TASK_STATE_FAILED},
	factoryv1.TaskState_TASK_STATE_REVIEW:      {factoryv1.TaskState_TASK_STATE_READY, factoryv1.TaskState_TASK_STATE_DONE, factoryv1.TaskState_TASK_STATE_FAILED},
	factoryv1.TaskState_TASK_STATE_DONE:        {},
	factoryv1.TaskState_TASK_STATE_FAILED:      {factoryv1.TaskState_TASK_STATE_READY, factoryv1.TaskState_TASK_STATE_BACKLOG},
	factoryv1.TaskState_TASK_STATE_PAUSED:      {factoryv1.TaskState_TASK_STATE_READY, factoryv1.TaskState_TASK_STATE_BACKLOG, factoryv1.TaskState_TASK_STATE_FAILED},
}

// taskData is one task's page.
type taskData struct {
	Task *factoryv1.Task
	// Payload is the payload indented for reading, cut at
	// shownPayloadBytes; PayloadCut says it was.
	Payload    string
	PayloadCut bool
	LastError  string
	ErrorCut   bool
	Note       string // the newest end of the notes
	NoteCut    bool
	Moves      []factoryv1.TaskState
	// History is the task's audit trail, newest first.
	History []historyEntry
	// HistoryOlder links to the next (older) page of history.
	HistoryOlder string
	// HistoryUnavailable says why there is no history (the API does not
	// serve it here).
	HistoryUnavailable string
}

// CanMove reports whether the operator may move the task to st.
func (d taskData) CanMove(st factoryv1.TaskState) bool { return slices.Contains(d.Moves, st) }

// CanRequeue and CanKill say whether the task page offers those buttons.
func (d taskData) CanRequeue() bool { return d.CanMove(factoryv1.TaskState_TASK_STATE_READY) }
func (d taskData) CanKill() bool    { return d.CanMove(factoryv1.TaskState_TASK_STATE_FAILED) }

// historyEntry is one audited call on the task, as the history shows it.
type historyEntry struct {
	*factoryv1.AuditEntry
	Method string // the RPC's method name, without its service
	// Change is what the call did to the task: "READY → FAILED",
	// "priority 0 → 5"; empty when the entry says nothing of it.
	Change string
}

func (s *Server) taskPage(rq *request) error {
	id := rq.r.PathValue("id")
	d := taskData{}
	var (
		wg               sync.WaitGroup
		taskErr, histErr error
		task             *factoryv1.GetTaskResponse
		hist             *factoryv1.ListAuditResponse
	)
	wg.Go(func() {
		task, taskErr = s.queue.GetTask(rq.ctx, &factoryv1.GetTaskRequest{TaskId: id})
	})
	wg.Go(func() {
		hist, histErr = s.tokens.ListAudit(rq.ctx, &factoryv1.ListAuditRequest{
			Target: id, PageSize: historyPageSize, PageToken: rq.r.URL.Query().Get("history_page"),
		})
	})
	wg.Wait()
	if taskErr != nil {
		return taskErr
	}
	switch status.Code(histErr) {
	case codes.OK:
		d.History = make([]historyEntry, len(hist.GetEntries()))
		for i, e := range hist.GetEntries() {
			d.History[i] = historyOf(e)
		}
		if tok := hist.GetNextPageToken(); tok != "" {
			d.HistoryOlder = "/tasks/" + url.PathEscape(id) + "?" + url.Values{"history_page": {tok}}.Encode() + "#history"
		}
	case codes.Unimplemented, codes.PermissionDenied, codes.InvalidArgument:
		// The task is still worth showing without its history; an
		// InvalidArgument is a stale history_page token.
		d.HistoryUnavailable = message(histErr)
	default:
		return histErr
	}
	t := task.GetTask()
	d.Task = t
	d.Payload, d.PayloadCut = indentJSON(t.GetPayloadJson(), shownPayloadBytes)
	d.LastError, d.ErrorCut = clipHead(t.GetLastError(), shownErrorBytes)
	d.Note, d.NoteCut = clipTail(t.GetNote(), shownNoteBytes)
	d.Moves = operatorMoves[t.GetState()]
	title := "Task " + shortID(t.GetId())
	return s.render(rq, http.StatusOK, "task", view{Title: title, Nav: "tasks", Topics: "tasks"}, d)
}

// taskPayload serves a task's whole payload, which the task page shows
// only the head of.
func (s *Server) taskPayload(rq *request) error {
	r, err := s.queue.GetTask(rq.ctx, &factoryv1.GetTaskRequest{TaskId: rq.r.PathValue("id")})
	if err != nil {
		return err
	}
	t := r.GetTask()
	h := rq.w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	// Task ids are letters, digits and ._:- only, safe in a quoted name.
	h.Set("Content-Disposition", fmt.Sprintf("inline; filename=%q", "task-"+t.GetId()+".json"))
	payload := t.GetPayloadJson()
	if payload == "" {
		payload = "{}"
	}
	_, err = rq.w.Write([]byte(payload))
	return err
}

// historyOf reads what an audit entry recorded of the task: the server
// keeps its state, priority and attempt before and after the call.
func historyOf(e *factoryv1.AuditEntry) historyEntry {
	h := historyEntry{AuditEntry: e, Method: e.GetRpc()}
	if i := strings.LastIndexByte(h.Method, '/'); i >= 0 {
		h.Method = h.Method[i+1:]
	}
	var before, after struct {
		State    string `json:"state"`
		Priority *int64 `json:"priority"`
	}
	// An entry whose JSON is not a task's (or is empty) just has no change.
	_ = json.Unmarshal([]byte(e.GetBeforeJson()), &before)
	_ = json.Unmarshal([]byte(e.GetAfterJson()), &after)
	var parts []string
	switch {
	case before.State != "" && after.State != "" && before.State != after.State:
		parts = append(parts, before.State+" → "+after.State)
	case before.State == "" && after.State != "":
		parts = append(parts, "→ "+after.State)
	}
	if before.Priority != nil && after.Priority != nil && *before.Priority != *after.Priority {
		parts = append(parts, fmt.Sprintf("priority %d → %d", *before.Priority, *after.Priority))
	}
	h.Change = strings.Join(parts, ", ")
	return h
}

// indentJSON lays JSON out for reading and cuts it to max bytes. Text that
// is not JSON is shown as it is.
func indentJSON(s string, max int) (string, bool) {
	if s == "" {
		return "", false
	}
	var b bytes.Buffer
	if err := json.Indent(&b, []byte(s), "", "  "); err == nil {
		s = b.String()
	}
	return clipHead(s, max)
}

// clipHead keeps the first max bytes of s, cut at a character boundary.
func clipHead(s string, max int) (string, bool) {
	if len(s) <= max {
		return s, false
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut], true
}

// clipTail keeps the last max bytes of s, cut at a character boundary:
// for notes, whose newest part is at the end.
func clipTail(s string, max int) (string, bool) {
	if len(s) <= max {
		return s, false
	}
	cut := len(s) - max
	for cut < len(s) && !utf8.RuneStart(s[cut]) {
		cut++
	}
	return s[cut:], true
}

// moveTaskTo is MoveTask with the form's reason; the API requires one and
// says so when it is blank.
func (s *Server) moveTaskTo(rq *request, to factoryv1.TaskState) (*factoryv1.Task, error) {
	r, err := s.queue.MoveTask(rq.ctx, &factoryv1.MoveTaskRequest{
		TaskId: rq.r.PathValue("id"), To: to, Reason: rq.r.PostForm.Get("reason"),
	})
	return r.GetTask(), err
}

func (s *Server) moveTask(rq *request) error {
	to, ok, err := parseTaskState(rq.r.PostForm.Get("to"))
	if err != nil {
		return status.Error(codes.InvalidArgument, "to: "+strings.TrimPrefix(message(err), "state: "))
	}
	if !ok {
		return status.Error(codes.InvalidArgument, "to: choose the state to move the task to")
	}
	t, err := s.moveTaskTo(rq, to)
	if err != nil {
		return err
	}
	return done(rq, "/tasks/"+url.PathEscape(t.GetId()), "Moved to "+enumName(t.GetState()))
}

func (s *Server) requeueTask(rq *request) error {
	t, err := s.moveTaskTo(rq, factoryv1.TaskState_TASK_STATE_READY)
	if err != nil {
		return err
	}
	return done(rq, "/tasks/"+url.PathEscape(t.GetId()), "Requeued: "+enumName(t.GetState()))
}

func (s *Server) killTask(rq *request) error {
	t, err := s.moveTaskTo(rq, factoryv1.TaskState_TASK_STATE_FAILED)
	if err != nil {
		return err
	}
	return done(rq, "/tasks/"+url.PathEscape(t.GetId()), "Killed: "+enumName(t.GetState()))
}

func (s *Server) setTaskPriority(rq *request) error {
	p, err := strconv.ParseInt(strings.TrimSpace(rq.r.PostForm.Get("priority")), 10, 32)
	if err != nil {
		return status.Error(codes.InvalidArgument, "priority: not a number")
	}
	r, err := s.queue.SetPriority(rq.ctx, &factoryv1.SetPriorityRequest{TaskId: rq.r.PathValue("id"), Priority: int32(p)})
	if err != nil {
		return err
	}
	return done(rq, "/tasks/"+url.PathEscape(r.GetTask().GetId()), fmt.Sprintf("Priority set to %d", r.GetTask().GetPriority()))
}

func (s *Server) pauseQueue(rq *request) error {
	r, err := s.queue.PauseQueue(rq.ctx, &factoryv1.PauseQueueRequest{Reason: rq.r.PostForm.Get("reason")})
	if err != nil {
		return err
	}
	return done(rq, "/tasks", fmt.Sprintf("Queue paused: %d READY task(s) moved to PAUSED", r.GetPaused()))
}

func (s *Server) resumeQueue(rq *request) error {
	r, err := s.queue.ResumeQueue(rq.ctx, &factoryv1.ResumeQueueRequest{})
	if err != nil {
		return err
	}
	return done(rq, "/tasks", fmt.Sprintf("Queue resumed: %d task(s) back to READY", r.GetResumed()))
}
