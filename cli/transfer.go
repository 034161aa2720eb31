package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"

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
}

func newQueueImportCommand(a *app) *cobra.Command {
	var (
		batch  int
		dryRun bool
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
  - Fields the server keeps itself (attempt, last_error, progress, note,
    created_at, ...) cannot be set through the API and start afresh.
  - Any other field is kept: it is merged into the payload object, so
    nothing in a hand-written file is lost.

Dependencies are created before their dependents; a dependency on an id
that is neither in DIR nor on the server is an error naming the file, and
so is a cycle. Tasks are created in batches, each all-or-nothing; an id
that already exists fails its batch with ALREADY_EXISTS.

--dry-run reads, checks and orders everything without creating anything.`,
		Example: `  factory queue import ./queue-backup --dry-run
  factory queue import ./queue-backup
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
			items, skipped, err := readFileQueue(dir)
			if err != nil {
				return err
			}
			sum := importSummary{Dir: dir, DryRun: dryRun, ByFolder: map[string]int{}, ByState: map[string]int{}, Skipped: skipped}
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
			}
			p.setTotal(int64(len(items)))
			// Each dependency not in DIR is looked up on the server.
			p.setPhase("ordering by dependencies")
			err = a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				waves, err := orderForImport(items, func(id string) (bool, error) {
					_, err := q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: id})
					if isCode(err, codes.NotFound) {
						return false, nil
					}
					return err == nil, err
				})
				if err != nil {
					return err
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
	for _, s := range sum.Skipped {
		fmt.Fprintf(a.stderr(), "skipped %s: not a .json file\n", s)
	}
	return nil
}
