package main

import (
	"slices"
	"testing"
)

// TestTasks: each task rewrites the sentences it suits, as documented,
// and refuses the others.
func TestTasks(t *testing.T) {
	cases := []struct {
		rewrite  func(string) (string, bool)
		in, want string
		ok       bool
	}{
		{renameTask, "Lily and Tim went to the park.", "Ingrid and Oskar went to the park.", true},
		{renameTask, "Tim's mom saw Tim.", "Oskar's mom saw Oskar.", true},
		{renameTask, "The sun was hot.", "", false},
		{styleTask, "Timmy loved to play with his toys.", "Timmy adored to frolic with his playthings.", true},
		{styleTask, "Big dogs ran.", "Enormous dogs dashed.", true},
		{styleTask, "It rained.", "", false},
		{quoteTask, "Lily was so happy and closed her eyes.", "\"I was so happy and closed my eyes,\" said Lily.", true},
		{quoteTask, "Lily and Tim ran.", "", false},
		{quoteTask, "Lily ran!", "", false},
		{quoteTask, "The dog ran.", "", false},
	}
	for _, c := range cases {
		got, ok := c.rewrite(c.in)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("%q → %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// TestSentences: sentences of 4 to 14 words, each once, in order; what
// follows a quotation from its first capital letter counts as one (the
// data holds such fragments).
func TestSentences(t *testing.T) {
	got := sentences([]string{"Once upon a time, there was a cat. It ran. \"Hi!\" said Sam to the cat. Once upon a time, there was a cat.", "The dog saw a big red ball and was glad!"})
	want := []string{"Once upon a time, there was a cat.", "Sam to the cat.", "The dog saw a big red ball and was glad!"}
	if !slices.Equal(got, want) {
		t.Errorf("sentences = %q, want %q", got, want)
	}
}
