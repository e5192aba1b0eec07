package task

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestSplitDeterministicAndDisjoint(t *testing.T) {
	a1, b1 := Split(1, 300, 50)
	a2, b2 := Split(1, 300, 50)
	if !bytes.Equal(JSONL(a1), JSONL(a2)) || !bytes.Equal(JSONL(b1), JSONL(b2)) {
		t.Fatal("the same seed gave different data")
	}
	if a3, _ := Split(2, 300, 50); bytes.Equal(JSONL(a1), JSONL(a3)) {
		t.Fatal("seeds 1 and 2 gave the same data")
	}
	seen := map[string]bool{}
	for _, s := range append(a1, b1...) {
		if seen[s] || len(s) > maxBytes || len(s) == 0 {
			t.Fatalf("sentence %q repeated or of bad length", s)
		}
		seen[s] = true
	}
	for line := range bytes.Lines(JSONL(b1)) {
		var ex struct{ Tokens []int }
		if err := json.Unmarshal(line, &ex); err != nil || len(ex.Tokens) == 0 {
			t.Fatalf("line %q: %v", line, err)
		}
		for _, tok := range ex.Tokens {
			if tok < 0 || tok > 255 {
				t.Fatalf("token %d is not a byte", tok)
			}
		}
	}
}
