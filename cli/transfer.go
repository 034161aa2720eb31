package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// exportSummary is what `queue export -o json` prints.
type exportSummary struct {
	Dir      string         `json:"dir"`
	Exported int            `json:"exported"`
	ByFolder map[string]int `json:"by_folder"`
}

func newQueueExportCommand(a *app) *cobra.Command {
	var pageSize int32
	cmd := &cobra.Command{
		Use:   "export DIR",
		Short: "Write every task to the runbook's folder layout",
		Long: `Export writes the whole queue as the runbook's file queue: one JSON file
per task at DIR/<state>/<task-id>.json, where <state> is one of backlog,
ready, in-progress, review, done, failed, paused.

Each file holds id, title, kind, role, assignee, priority, max_attempts,
attempt, depends_on, labels, last_error, progress, note, created_at and
payload (the task's JSON payload as a nested value, not a string).
DIR must not already hold task files.

Use it for backups a person can read, to hand work to the shell runbook in
an emergency, or with "queue import" to move a queue between control
planes.`,
		Example: `  factory queue export ./queue-backup
  factory queue export /srv/factory/queue -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if err := checkExportDir(dir); err != nil {
				return err
			}
			for _, folder := range stateNames {
				if err := os.MkdirAll(filepath.Join(dir, folder), 0o755); err != nil {
					return err
				}
			}
			sum := exportSummary{Dir: dir, ByFolder: map[string]int{}}
			for _, folder := range stateNames {
				sum.ByFolder[folder] = 0
			}
			p := a.newProgress("exporting", "task", "tasks")
			defer p.stop()
			err := a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				// Full tasks: the files keep every payload.
				req := &factoryv1.ListTasksRequest{PageSize: pageSize, View: factoryv1.TaskView_TASK_VIEW_FULL}
				for {
					resp, err := q.ListTasks(ctx, req)
					if err != nil {
						return err
					}
					for _, t := range resp.GetTasks() {
						folder, err := writeExportFile(dir, t)
						if err != nil {
							return err
						}
						sum.ByFolder[folder]++
						sum.Exported++
						p.add(1, 0)
					}
					if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
						return nil
					}
				}
			})
			if err != nil {
				return err
			}
			p.finish("exported %s to %s in %s", p.count(int64(sum.Exported)), dir, p.elapsed())
			if a.jsonOutput() {
				return writeJSON(a.stdout(), sum)
			}
			fmt.Fprintf(a.stdout(), "exported %d task(s) to %s\n", sum.Exported, dir)
			return writeFolderCounts(a, sum.ByFolder, nil)
		},
	}
	cmd.Flags().Int32Var(&pageSize, "page-size", 1000, "tasks fetched per call")
	return cmd
}

func writeFolderCounts(a *app, byFolder map[string]int, note map[string]string) error {
	tw := newTable(a.stdout())
	fmt.Fprintln(tw, "FOLDER\tTASKS\t")
	for _, folder := range stateNames {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", folder, byFolder[folder], note[folder])
	}
	return tw.Flush()
}

// importSummary is what `queue import -o json` prints.
type importSummary struct {
	Dir      string `json:"dir"`
	Imported int    `json:"imported"`
	DryRun   bool   `json:"dry_run,omitempty"`
	// ByFolder counts files read per folder.
	ByFolder map[string]int `json:"by_folder"`
	// ByState counts tasks per state they were created in (READY work with
	// unfinished dependencies lands in BACKLOG; a paused queue pauses it).
	ByState map[string]int `json:"by_state"`
	// InProgressRequeued counts in-progress tasks created READY: their
	// holders hold no lease on this server.
	InProgressRequeued int `json:"in_progress_requeued"`
	// PayloadMerged counts files whose unknown fields went into the payload.
	PayloadMerged int      `json:"payload_merged"`
	Skipped       []string `json:"skipped"`
	Waves         int      `json:"waves"`
	// SkippedExisting counts files whose task id exists on the server
	// already, skipped under --skip-existing.
	SkippedExisting int `json:"skipped_existing"`
	// HistoryKept counts files whose attempt, last_error or progress the
	// tasks keep.
	HistoryKept int `json:"history_kept"`
	// Dropped counts, per field, the files with a value for it that the
	// tasks could not keep (the API sets none of them).
	Dropped map[string]int `json:"dropped"`
}

func newQueueImportCommand(a *app) *cobra.Command {
	var (
		batch        int
		dryRun       bool
		skipExisting bool
	)
	cmd := &cobra.Command{
		Use:   "import DIR",
		Short: "Create tasks from the runbook's folder layout",
		Long: `Import reads a file queue (DIR/<state>/<task-id>.json, as written by
"queue export" or by the shell runbook) and creates every task in it.

  - The folder gives the state. Tasks in in-progress/ are created READY:
    whoever held them holds no lease on this server, so they are handed
    out again.
  - The file name without .json gives the id, unless the file has "id".
  - id, title, kind, role, assignee, priority, max_attempts, depends_on,
    labels, approval_tier and payload (a nested value, or payload_json as
    text) become the task's fields.
  - attempt, last_error and progress are kept: a task that failed twice
    comes in with attempt 2, so its retries are not reset (an operator
    token is needed for this; attempt is at most max_attempts).
  - Other fields the server keeps itself (note, created_at, updated_at,
    lease, run_after) cannot be set through the API: the summary says how
    many files had each, under "dropped".
  - Any other field is kept: it is merged into the payload object, so
    nothing in a hand-written file is lost.

Every file is checked before anything is created: one that is not valid,
repeats another's id, depends on an id that is neither in DIR nor on the
server, is part of a cycle, or names a task that exists on the server
already is listed with its problem, all of them in one run, and then
nothing is imported. With --skip-existing, files whose task id exists on
the server are skipped instead (and counted), so an import can be run
again after adding files: it creates just the new ones. Dependencies are
created before their dependents, in batches, each all-or-nothing.

--dry-run reads, checks and orders everything without creating anything.`,
		Example: `  factory queue import ./queue-backup --dry-run
  factory queue import ./queue-backup
  factory queue import ./queue-backup --skip-existing
  factory --addr new-host:7420 queue import /srv/factory/queue -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if batch < 1 || batch > 1000 {
				return usageErrorf("--batch must be 1 to 1000")
			}
			dir := args[0]
			p := a.newProgress("importing", "task", "tasks")
			defer p.stop()
			p.setPhase("reading task files")
			items, skipped, problems, err := readFileQueue(dir)
			if err != nil {
				return err
			}
			sum := importSummary{Dir: dir, DryRun: dryRun, ByFolder: map[string]int{}, ByState: map[string]int{}, Skipped: skipped, Dropped: map[string]int{}}
			if sum.Skipped == nil {
				sum.Skipped = []string{}
			}
			for _, folder := range stateNames {
				sum.ByFolder[folder] = 0
			}
			for _, it := range items {
				sum.ByFolder[it.Folder]++
				if it.Folder == "in-progress" {
					sum.InProgressRequeued++
				}
				if len(it.MergedFields) > 0 {
					sum.PayloadMerged++
				}
				if it.hasHistory() {
					sum.HistoryKept++
				}
				for _, f := range it.Dropped {
					sum.Dropped[f]++
				}
			}
			p.setTotal(int64(len(items)))
			err = a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				// Which of the files' tasks exist already: each is a
				// problem, or skipped under --skip-existing.
				p.setPhase("checking which tasks exist")
				onServer := newTaskExistence(ctx, q)
				ids := make([]string, len(items))
				for i, it := range items {
					ids[i] = it.Req.GetTaskId()
				}
				if err := onServer.load(ids); err != nil {
					return err
				}
				fresh := items[:0:0]
				for _, it := range items {
					switch {
					case !onServer.has(it.Req.GetTaskId()):
						fresh = append(fresh, it)
					case skipExisting:
						sum.SkippedExisting++
					default:
						problems = append(problems, fmt.Sprintf("%s: task %s exists on the server already (--skip-existing skips such files)", it.File, it.Req.GetTaskId()))
					}
				}
				// Each dependency not in DIR is looked up on the server.
				p.setPhase("ordering by dependencies")
				waves, more, err := orderForImport(fresh, onServer.exists)
				if err != nil {
					return err
				}
				if problems = append(problems, more...); len(problems) > 0 {
					return problems
				}
				sum.Waves = len(waves)
				if dryRun {
					return nil
				}
				p.setPhase("")
				for _, wave := range waves {
					for start := 0; start < len(wave); start += batch {
						chunk := wave[start:min(start+batch, len(wave))]
						reqs := make([]*factoryv1.CreateTaskRequest, len(chunk))
						for i, it := range chunk {
							reqs[i] = it.Req
						}
						resp, err := q.CreateTasks(ctx, &factoryv1.CreateTasksRequest{Tasks: reqs})
						if err != nil {
							return fmt.Errorf("creating %s and %d more: %w (%d task(s) created before this batch)",
								chunk[0].File, len(chunk)-1, err, sum.Imported)
						}
						for _, t := range resp.GetTasks() {
							sum.ByState[stateLabel(t.GetState())]++
						}
						sum.Imported += len(resp.GetTasks())
						p.add(int64(len(resp.GetTasks())), 0)
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			if dryRun {
				p.finish("checked %s in %s; dry run: nothing created", p.count(int64(len(items))), p.elapsed())
			} else {
				p.finish("imported %s from %s in %s", p.count(int64(sum.Imported)), dir, p.elapsed())
			}
			return a.printImportSummary(sum)
		},
	}
	cmd.Flags().IntVar(&batch, "batch", 500, "tasks per CreateTasks call (at most 1000)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "read, check and order without creating")
	cmd.Flags().BoolVar(&skipExisting, "skip-existing", false, "skip files whose task id exists on the server already, instead of failing")
	return cmd
}

func (a *app) printImportSummary(sum importSummary) error {
	if a.jsonOutput() {
		return writeJSON(a.stdout(), sum)
	}
	total := 0
	for _, n := range sum.ByFolder {
		total += n
	}
	if sum.DryRun {
		fmt.Fprintf(a.stdout(), "dry run: %d task file(s) in %s are valid, to be created in %d wave(s)\n", total, sum.Dir, sum.Waves)
	} else {
		fmt.Fprintf(a.stdout(), "imported %d task(s) from %s\n", sum.Imported, sum.Dir)
	}
	note := map[string]string{}
	if sum.InProgressRequeued > 0 {
		note["in-progress"] = "→ READY: their holders hold no lease here"
	}
	if err := writeFolderCounts(a, sum.ByFolder, note); err != nil {
		return err
	}
	if !sum.DryRun && len(sum.ByState) > 0 {
		var parts []string
		for _, st := range allStates {
			if n := sum.ByState[stateLabel(st)]; n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", stateLabel(st), n))
			}
		}
		fmt.Fprintf(a.stdout(), "created as: %s\n", strings.Join(parts, ", "))
	}
	if sum.PayloadMerged > 0 {
		fmt.Fprintf(a.stdout(), "%d file(s) had fields that are not task fields; they were kept in the payload\n", sum.PayloadMerged)
	}
	printImportHistory(a.stdout(), sum)
	for _, s := range sum.Skipped {
		fmt.Fprintf(a.stderr(), "skipped %s: not a .json file\n", s)
	}
	return nil
}
