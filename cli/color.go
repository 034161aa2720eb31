package cli

import (
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Colour and symbols are for a person at a terminal. Output that goes to a
// pipe or a file is read by scripts, grep and logs, where an escape code is
// noise and an emoji is a byte sequence to match: there the CLI prints
// plain words ("ok", "FAIL") and no colour.
//
// styleEnv overrides the detection: "always" styles output even into a
// pipe (`factory nodes | less -R`), "never" never does, and "auto" (or
// unset) styles only a terminal, and only while NO_COLOR is unset or empty
// (https://no-color.org) and TERM is not "dumb". An explicit
// FACTORY_COLOR=always wins over NO_COLOR, as a flag would.
const styleEnv = "FACTORY_COLOR"

// A colour is an SGR sequence; the empty colour leaves text as it is.
type colour string

const (
	colourNone   colour = ""
	colourGreen  colour = "\x1b[32m"
	colourRed    colour = "\x1b[31m"
	colourYellow colour = "\x1b[33m"
	colourCyan   colour = "\x1b[36m"
	colourReset         = "\x1b[0m"
)

// paint wraps s in c. The codes take no room on the screen, so a painted
// word keeps the column alignment computed for the plain one.
func (c colour) paint(s string) string {
	if c == colourNone || s == "" {
		return s
	}
	return string(c) + s + colourReset
}

// isTerminal reports whether w is a terminal (a character device other
// than /dev/null, which a redirect to it would otherwise pass for).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || f == nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	if null, err := os.Stat(os.DevNull); err == nil && os.SameFile(fi, null) {
		return false
	}
	return true
}

// terminal reports whether standard output is a terminal that understands
// cursor movement: where --watch redraws in place.
func (a *app) terminal() bool {
	return isTerminal(a.opts.Stdout) && os.Getenv("TERM") != "dumb"
}

// styled reports whether output gets colour and symbols (see styleEnv).
func (a *app) styled() bool {
	switch strings.ToLower(strings.TrimSpace(os.Getenv(styleEnv))) {
	case "always":
		return true
	case "never":
		return false
	}
	return os.Getenv("NO_COLOR") == "" && a.terminal()
}

// tableOutput reports whether the output is for people (the tables), the
// only output that is ever painted: JSON and the other formats for scripts
// stay exact.
func (a *app) tableOutput() bool {
	return a.output == outputTable || a.output == outputWide
}

// stateColour is the colour of a state or severity word wherever a table
// shows one: green for healthy, red for broken, yellow for needs a look.
func stateColour(word string) colour {
	switch strings.ToUpper(word) {
	case "READY", "ONLINE", "DONE", "RESOLVED", "OK", "RUNNING", "ARMED":
		return colourGreen
	case "FAILED", "FAIL", "OFFLINE", "FIRING", "CRITICAL", "STOPPED", "CAPPED":
		return colourRed
	case "STALE", "PENDING", "PAUSED", "DRAINED", "WARNING", "ALERTING":
		return colourYellow
	case "IN_PROGRESS":
		return colourCyan
	}
	return colourNone
}

// paintStates paints each word of a cell such as "ONLINE,DRAINED".
func paintStates(cell string) string {
	words := strings.Split(cell, ",")
	for i, w := range words {
		words[i] = stateColour(w).paint(w)
	}
	return strings.Join(words, ",")
}

// paintVRAM paints a GPU's "used/total" memory cell red where health fails
// it: at 23/24 of its total the next model load would not fit.
func paintVRAM(cell string) string {
	usedText, totalText, ok := strings.Cut(cell, "/")
	used, err1 := strconv.ParseInt(usedText, 10, 64)
	total, err2 := strconv.ParseInt(totalText, 10, 64)
	if !ok || err1 != nil || err2 != nil || total <= 0 {
		return cell
	}
	if used*24 >= total*23 {
		return colourRed.paint(cell)
	}
	return cell
}

// columnPainters paint the cells under the named headers.
type columnPainters map[string]func(cell string) string

// paintColumns paints, in a rendered table, the first word of each cell
// under a header named in painters. It works on the finished text so the
// tables are laid out exactly as without colour: a header line (capitals
// only) fixes each column's position, in runes as the table writer counts
// them, until a blank line ends the table. Only the words the painters
// recognise get colour, and the text has already been escaped, so the
// only escape codes in the result are the painters'.
func paintColumns(text string, painters columnPainters) string {
	var b strings.Builder
	type column struct {
		at    int
		paint func(string) string
	}
	var cols []column
	for line := range strings.SplitAfterSeq(text, "\n") {
		body := strings.TrimSuffix(line, "\n")
		switch {
		case strings.TrimSpace(body) == "":
			cols = nil
		case cols == nil:
			if isHeaderLine(body) {
				for name, paint := range painters {
					if at := headerColumn(body, name); at >= 0 {
						cols = append(cols, column{at, paint})
					}
				}
				// Right to left, so painting one cell leaves the
				// positions of the cells before it as they were.
				slices.SortFunc(cols, func(x, y column) int { return y.at - x.at })
				if cols == nil {
					cols = []column{}
				}
			}
		default:
			runes := []rune(body)
			for _, c := range cols {
				if c.at >= len(runes) || (c.at > 0 && runes[c.at-1] != ' ') || runes[c.at] == ' ' {
					continue
				}
				end := c.at
				for end < len(runes) && runes[end] != ' ' {
					end++
				}
				painted := []rune(c.paint(string(runes[c.at:end])))
				runes = slices.Concat(runes[:c.at], painted, runes[end:])
			}
			line = string(runes) + line[len(body):]
		}
		b.WriteString(line)
	}
	return b.String()
}

// isHeaderLine reports whether line reads as a table's header: capitals,
// no lower-case letter.
func isHeaderLine(line string) bool {
	upper := false
	for _, r := range line {
		if unicode.IsLower(r) {
			return false
		}
		upper = upper || unicode.IsUpper(r)
	}
	return upper
}

// headerColumn is the rune position of the header name as a whole word in
// line, or -1.
func headerColumn(line, name string) int {
	for from := 0; from < len(line); {
		i := strings.Index(line[from:], name)
		if i < 0 {
			return -1
		}
		i += from
		end := i + len(name)
		if (i == 0 || line[i-1] == ' ') && (end == len(line) || line[end] == ' ') {
			return utf8.RuneCountInString(line[:i])
		}
		from = end
	}
	return -1
}

var (
	// statusLine is one "Label:   value" line of a key/value screen.
	statusLine = regexp.MustCompile(`^([A-Z][A-Za-z ]*):( +)(.*)$`)
	// agentCount is a "3 stale" in the Agents line, taskCount a "failed 2"
	// in the Tasks line.
	agentCount = regexp.MustCompile(`(\d+) (online|stale|offline)`)
	taskCount  = regexp.MustCompile(`\b(failed|paused) (\d+)`)
)

// paintStatus paints the key/value screens of status and queue stats:
// the first word of the values the CLI itself words (running, PAUSED,
// armed, STOPPED, ON), the non-zero counts of agents stale or offline,
// tasks failed or paused, and alerts firing, and a CAPPED or ALERTING
// spend. Lines of other shapes (a table's rows, an alert's details) pass.
func paintStatus(text string) string {
	var b strings.Builder
	for line := range strings.SplitAfterSeq(text, "\n") {
		body := strings.TrimSuffix(line, "\n")
		m := statusLine.FindStringSubmatch(body)
		if m == nil {
			b.WriteString(line)
			continue
		}
		label, pad, value := m[1], m[2], m[3]
		first, rest := value, ""
		if i := strings.IndexByte(value, ' '); i >= 0 {
			first, rest = value[:i], value[i:]
		}
		switch label {
		case "Queue", "Emergency stop":
			value = stateColour(first).paint(first) + rest
		case "Maintenance":
			if first == "ON" {
				value = colourYellow.paint(first) + rest
			}
		case "Alerts firing":
			if n, err := strconv.Atoi(first); err == nil && n > 0 {
				value = colourRed.paint(first) + rest
			}
		case "Agents":
			value = agentCount.ReplaceAllStringFunc(value, func(s string) string {
				n, word, _ := strings.Cut(s, " ")
				if n == "0" {
					return s
				}
				return map[string]colour{"online": colourGreen, "stale": colourYellow, "offline": colourRed}[word].paint(s)
			})
		case "Tasks":
			value = taskCount.ReplaceAllStringFunc(value, func(s string) string {
				word, n, _ := strings.Cut(s, " ")
				if n == "0" {
					return s
				}
				return stateColour(word).paint(s)
			})
		case "Spend today":
			value = strings.Replace(value, "(CAPPED)", colourRed.paint("(CAPPED)"), 1)
			value = strings.Replace(value, "(ALERTING)", colourYellow.paint("(ALERTING)"), 1)
		}
		b.WriteString(label + ":" + pad + value + line[len(body):])
	}
	return b.String()
}
