package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// checkStream feeds ids one by one and checks that the pieces are valid
// UTF-8 and add up to Decode of the whole sequence.
func checkStream(t *testing.T, tk *Tokenizer, ids []int, skipSpecial bool) {
	t.Helper()
	want := tk.Decode(ids, skipSpecial)
	st := tk.NewStream(skipSpecial)
	var b strings.Builder
	for _, id := range ids {
		piece := st.Next(id)
		if !utf8.ValidString(piece) {
			t.Fatalf("ids %v: piece %q is not valid UTF-8", ids, piece)
		}
		b.WriteString(piece)
	}
	b.WriteString(st.Flush())
	if b.String() != want {
		t.Errorf("ids %v (skip special %v):\nstream %q\nDecode %q", ids, skipSpecial, b.String(), want)
	}
}

// TestStreamMatchesDecode streams the encodings of the reference strings
// through every reference tokenizer and the llama2.c one.
func TestStreamMatchesDecode(t *testing.T) {
	strs, err := refStrings()
	if err != nil {
		t.Fatal(err)
	}
	n := 600
	if testing.Short() {
		n = 100
	}
	names := []string{"llama2", "llama3", "qwen3", "gemma3", "gpt4o", "bert", "unigram", "gpt2style", "llama2meta"}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			tk := refTokenizer(t, name)
			for _, s := range strs[:n] {
				ids := tk.Encode(s, true)
				checkStream(t, tk, ids, false)
				checkStream(t, tk, ids, true)
			}
		})
	}
	t.Run("llama2.c", func(t *testing.T) {
		tk := loadStories260K(t)
		for _, s := range strs[:n] {
			ids := tk.Encode(s, true)
			checkStream(t, tk, ids, false)
			checkStream(t, tk, ids, true)
		}
	})
}

// TestStreamHoldsIncompleteUTF8 checks that a character split over byte
// tokens appears only when its last byte arrives.
func TestStreamHoldsIncompleteUTF8(t *testing.T) {
	tk := refTokenizer(t, "llama3")
	ids := tk.Encode("日", false) // three bytes, split by the byte-level BPE into more than one token?
	if len(ids) < 2 {
		ids = tk.Encode("𠀋", false)
	}
	if len(ids) < 2 {
		t.Skip("no character of the test spans several tokens")
	}
	st := tk.NewStream(false)
	for _, id := range ids[:len(ids)-1] {
		if got := st.Next(id); got != "" {
			t.Fatalf("piece %q before the character is complete", got)
		}
	}
	if got := st.Next(ids[len(ids)-1]); got == "" || !utf8.ValidString(got) {
		t.Fatalf("last piece %q", got)
	}
	// A byte that never completes comes out as U+FFFD at Flush.
	st = tk.NewStream(false)
	st.Next(ids[0])
	if got := st.Flush(); got != "\uFFFD" {
		t.Errorf("Flush of an incomplete character = %q, want U+FFFD", got)
	}
}
