package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"text/template"

	"gopkg.in/yaml.v3"
)

// The -o formats. table and wide are for people; json, yaml and template
// are the data formats: all three render the one JSON document a command
// builds (see writeResult), so a script can move between them and get the
// same fields, names and values.
const (
	outputWide     = "wide"
	outputYAML     = "yaml"
	outputTemplate = "template"
	// outputGoTemplate is kubectl's spelling of the same thing.
	outputGoTemplate = "go-template"
)

// outputFormats is what --output accepts, as its help and errors list it.
var outputFormats = []string{outputTable, outputWide, outputJSON, outputYAML, outputTemplate + "=GOTEMPLATE"}

// outputFormat is a parsed --output value.
type outputFormat struct {
	kind string
	// tmpl is set for template=.
	tmpl *template.Template
}

// outputKind is the name part of an --output value: "template" for
// "template={{.id}}". It does not parse the template, so it is cheap
// enough for every write.
func outputKind(flag string) string {
	kind, _, _ := strings.Cut(flag, "=")
	if kind == outputGoTemplate {
		return outputTemplate
	}
	return kind
}

// isDataOutput reports whether flag asks for data (json, yaml or a
// template) rather than a table.
func isDataOutput(flag string) bool {
	switch outputKind(flag) {
	case outputJSON, outputYAML, outputTemplate:
		return true
	}
	return false
}

// parseOutputFormat validates an --output value and compiles its template.
func parseOutputFormat(flag string) (*outputFormat, error) {
	kind := outputKind(flag)
	_, text, hasArg := strings.Cut(flag, "=")
	switch kind {
	case outputTable, outputWide, outputJSON, outputYAML:
		if hasArg {
			return nil, fmt.Errorf("--output %q: %s takes no value", flag, kind)
		}
		return &outputFormat{kind: kind}, nil
	case outputTemplate:
		if strings.TrimSpace(text) == "" {
			return nil, fmt.Errorf("--output %q: want template=GOTEMPLATE, a Go text/template such as template='{{range .}}{{.id}}{{\"\\n\"}}{{end}}'", flag)
		}
		// A field that is not there is an error, not "<no value>": a
		// misspelt key in a script should fail, not print a blank column.
		tmpl, err := template.New("output").Option("missingkey=error").Funcs(templateFuncs).Parse(text)
		if err != nil {
			return nil, fmt.Errorf("--output template: %w", err)
		}
		return &outputFormat{kind: kind, tmpl: tmpl}, nil
	}
	return nil, fmt.Errorf("--output %q: want one of %s", flag, strings.Join(outputFormats, ", "))
}

// applyOutputFlag validates --output and hands the parsed format to the
// app's stdout, where writeResult and the table writers find it: the
// writers take an io.Writer, and this way every command that prints
// through them honours -o without each one passing the format along.
func (a *app) applyOutputFlag() error {
	f, err := parseOutputFormat(a.output)
	if err != nil {
		return usageErrorf("%v", err)
	}
	if sw, ok := a.out.(*safeWriter); ok {
		sw.format = f
	}
	return nil
}

// formatOf is the -o format w carries; a writer that carries none (a
// test's buffer) gets JSON and narrow tables, what the CLI printed before
// there was a choice.
func formatOf(w io.Writer) *outputFormat {
	if sw, ok := w.(*safeWriter); ok && sw.format != nil {
		return sw.format
	}
	return &outputFormat{kind: outputJSON}
}

// wideOutput reports whether a table written to w should show its wide
// form (-o wide). A command whose table has no wide form prints the
// normal one.
func wideOutput(w io.Writer) bool { return formatOf(w).kind == outputWide }

// writeResult prints a command's result, given as the exact JSON that -o
// json prints, in the format w carries: indented JSON, YAML of the same
// data, or the template's text. Every data writer (writeProto,
// writeProtoList, writeJSON) ends here.
func writeResult(w io.Writer, raw []byte) error {
	switch f := formatOf(w); f.kind {
	case outputYAML:
		return writeYAML(w, raw, false)
	case outputTemplate:
		return writeTemplate(w, f.tmpl, raw)
	default:
		return writeIndented(w, raw)
	}
}

// writeResultLine prints one item of a stream (watch, events): a JSON
// line, a YAML document after "---", or the template's text for the item.
func writeResultLine(w io.Writer, raw []byte) error {
	switch f := formatOf(w); f.kind {
	case outputYAML:
		return writeYAML(w, raw, true)
	case outputTemplate:
		return writeTemplate(w, f.tmpl, raw)
	default:
		_, err := fmt.Fprintf(w, "%s\n", raw)
		return err
	}
}

// writeYAML converts JSON into YAML that decodes to the same data: key
// order kept, strings that would read as another type (yes, 1234, null)
// quoted, numbers and booleans left as they are. A string holding a
// character that must not reach a terminal (see unsafeRune) is written
// double-quoted and the character as a YAML escape, so the value stays
// exact and the terminal safe.
func writeYAML(w io.Writer, raw []byte, document bool) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	node, err := yamlNodeFromJSON(dec)
	if err != nil {
		return fmt.Errorf("yaml output: %w", err)
	}
	var buf bytes.Buffer
	if document {
		buf.WriteString("---\n")
	}
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(node); err != nil {
		return fmt.Errorf("yaml output: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("yaml output: %w", err)
	}
	out := buf.Bytes()
	if needsEscape(out, escapeJSON) {
		// Only inside double-quoted scalars (forced above), where
		// "\u202e" is YAML for the character itself.
		out = appendEscaped(nil, out, escapeJSON)
	}
	_, err = w.Write(out)
	return err
}

// yamlNodeFromJSON reads one JSON value from dec as a YAML node.
func yamlNodeFromJSON(dec *json.Decoder) (*yaml.Node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch v := tok.(type) {
	case json.Delim:
		kind, end := yaml.MappingNode, json.Delim('}')
		if v == '[' {
			kind, end = yaml.SequenceNode, ']'
		}
		node := &yaml.Node{Kind: kind}
		for dec.More() {
			if kind == yaml.MappingNode {
				key, err := dec.Token()
				if err != nil {
					return nil, err
				}
				node.Content = append(node.Content, yamlString(key.(string)))
			}
			child, err := yamlNodeFromJSON(dec)
			if err != nil {
				return nil, err
			}
			node.Content = append(node.Content, child)
		}
		if tok, err := dec.Token(); err != nil || tok != end {
			return nil, fmt.Errorf("malformed JSON: want %q, got %v (%v)", end, tok, err)
		}
		if len(node.Content) == 0 {
			node.Style = yaml.FlowStyle // {} and [], not an empty block
		}
		return node, nil
	case string:
		return yamlString(v), nil
	case json.Number:
		tag := "!!float"
		if _, err := strconv.ParseInt(v.String(), 10, 64); err == nil {
			tag = "!!int"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: v.String()}, nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(v)}, nil
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
	return nil, fmt.Errorf("unexpected JSON token %v", tok)
}

// yamlString is a string scalar. yaml.v3 quotes one that YAML 1.2 would
// read as another type (1234, null, ""); what YAML 1.1 readers (PyYAML,
// older tools) would also misread, "yes", "off", "1:20", is quoted here,
// as yaml.v3 does for a Go string. A string holding a character that
// must be escaped is double-quoted, where YAML has escapes for it.
func yamlString(s string) *yaml.Node {
	node := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	if strings.ContainsFunc(s, unsafeRune) || yaml11Bool(s) || yaml11Sexagesimal.MatchString(s) {
		node.Style = yaml.DoubleQuotedStyle
	}
	return node
}

// yaml11Bool reports whether a YAML 1.1 reader takes s for a boolean.
func yaml11Bool(s string) bool {
	switch s {
	case "y", "Y", "yes", "Yes", "YES", "on", "On", "ON",
		"n", "N", "no", "No", "NO", "off", "Off", "OFF":
		return true
	}
	return false
}

// yaml11Sexagesimal matches YAML 1.1's base-60 numbers ("1:20" is 80).
var yaml11Sexagesimal = regexp.MustCompile(`^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`)

// templateFuncs are what a template may call beyond text/template's own.
var templateFuncs = template.FuncMap{
	// json prints a value (an object, a list) as compact JSON.
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
}

// writeTemplate runs tmpl over the JSON data, decoded into maps, slices,
// strings, json.Numbers (printed as the JSON wrote them), booleans and
// nil. Strings are escaped as table cells are (a newline in an agent's
// title prints as \n), so a value cannot forge a line of the output nor
// drive the terminal; -o json and -o yaml keep values exact.
func writeTemplate(w io.Writer, tmpl *template.Template, raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var data any
	if err := dec.Decode(&data); err != nil {
		return fmt.Errorf("template output: %w", err)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, escapeValues(data)); err != nil {
		return fmt.Errorf("--output template: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// escapeValues returns v with every string, map keys included, passed
// through escapeTerminal.
func escapeValues(v any) any {
	switch v := v.(type) {
	case string:
		return escapeTerminal(v)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, val := range v {
			out[escapeTerminal(k)] = escapeValues(val)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, val := range v {
			out[i] = escapeValues(val)
		}
		return out
	}
	return v
}
