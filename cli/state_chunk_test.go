package cli

import (
	"bufio"
	"strings"
	"testing"
	"unicode/utf8"
)

// Chunks end at a line's end, hold whole lines up to the limit, cut a
// longer line only between characters, and join back to the input.
func TestChunkerCutsAtLinesAndCharacters(t *testing.T) {
	long := strings.Repeat("é", 40) // 80 bytes, two per character
	input := "header\n" + "short one\n" + long + "\n" + "a\n" + "b\n" + "no newline at the end"
	c := &chunker{br: bufio.NewReaderSize(strings.NewReader(input), 16), max: 25}
	var chunks []string
	for {
		chunk, err := c.next()
		if err != nil {
			t.Fatal(err)
		}
		if chunk == "" {
			break
		}
		chunks = append(chunks, chunk)
	}
	if got := strings.Join(chunks, ""); got != input {
		t.Fatalf("chunks join to %q, want %q", got, input)
	}
	for i, ch := range chunks {
		switch {
		case len(ch) > 25:
			t.Errorf("chunk %d is %d bytes, over the limit", i, len(ch))
		case !utf8.ValidString(ch):
			t.Errorf("chunk %d %q cuts a character", i, ch)
		case !strings.HasSuffix(ch, "\n") && !strings.Contains(long+"no newline at the end", ch) && i != len(chunks)-1:
			t.Errorf("chunk %d %q ends inside a short line", i, ch)
		}
	}
	if chunks[0] != "header\nshort one\n" {
		t.Errorf("first chunk %q: want the two short lines together", chunks[0])
	}
}
