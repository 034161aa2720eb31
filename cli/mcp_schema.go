package cli

import (
	"fmt"
	"reflect"

	"github.com/google/jsonschema-go/jsonschema"
)

// mcpRule narrows one property of a tool's input schema, so that the
// schema an LLM reads carries the API's own limits (the buf.validate rules
// in proto/factory/v1) and a call that breaks one is refused before it
// reaches the control plane.
type mcpRule func(*jsonschema.Schema)

// API patterns, as proto/factory/v1 spells them.
const (
	apiTaskIDPattern   = `^[A-Za-z0-9._:-]{1,128}$`
	apiNamePattern     = `^[A-Za-z0-9._:/-]*$`
	apiSpendIDPattern  = `^[A-Za-z0-9._:/@+=-]*$`
	apiKindPattern     = `^[A-Za-z0-9._:/ -]*$`
	apiNotBlankPattern = `\S`
)

func schemaMaxLen(n int) mcpRule {
	return func(s *jsonschema.Schema) { s.MaxLength = jsonschema.Ptr(n) }
}

// schemaNonEmpty is the API's "required" on a string: not empty.
func schemaNonEmpty() mcpRule {
	return func(s *jsonschema.Schema) { s.MinLength = jsonschema.Ptr(1) }
}

// schemaNotBlank is the API's "required and not blank".
func schemaNotBlank() mcpRule {
	return func(s *jsonschema.Schema) {
		s.MinLength = jsonschema.Ptr(1)
		s.Pattern = apiNotBlankPattern
	}
}

func schemaPattern(p string) mcpRule { return func(s *jsonschema.Schema) { s.Pattern = p } }

func schemaEnum(values ...string) mcpRule {
	return func(s *jsonschema.Schema) {
		s.Enum = make([]any, len(values))
		for i, v := range values {
			s.Enum[i] = v
		}
	}
}

func schemaRange(lo, hi float64) mcpRule {
	return func(s *jsonschema.Schema) {
		s.Minimum = jsonschema.Ptr(lo)
		s.Maximum = jsonschema.Ptr(hi)
	}
}

func schemaMaxItems(n int) mcpRule {
	return func(s *jsonschema.Schema) { s.MaxItems = jsonschema.Ptr(n) }
}

// schemaItems applies rules to each element of an array.
func schemaItems(rules ...mcpRule) mcpRule {
	return func(s *jsonschema.Schema) {
		for _, r := range rules {
			r(s.Items)
		}
	}
}

// schemaObject makes the property a free-form JSON object (a payload).
func schemaObject() mcpRule {
	return func(s *jsonschema.Schema) {
		*s = jsonschema.Schema{Type: "object", Description: s.Description}
	}
}

// mcpInputSchema is the schema of In, with rules applied to its
// properties by JSON name. A rule for a property In lacks is a bug and
// panics, at start.
func mcpInputSchema[In any](rules map[string][]mcpRule) *jsonschema.Schema {
	s, err := jsonschema.For[In](nil)
	if err != nil {
		panic(fmt.Sprintf("input schema of %v: %v", reflect.TypeFor[In](), err))
	}
	for name, rs := range rules {
		p, ok := s.Properties[name]
		if !ok {
			panic(fmt.Sprintf("input schema of %v has no property %q", reflect.TypeFor[In](), name))
		}
		for _, r := range rs {
			r(p)
		}
	}
	return s
}
