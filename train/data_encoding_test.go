package train

import (
	"errors"
	"strings"
	"testing"
)

// A UTF-8 byte-order mark before the first line is skipped; one inside
// the file, or a UTF-16 or UTF-32 file, is named for what it is (not "invalid
// character 'ï'").
func TestReadJSONLByteOrderMarks(t *testing.T) {
	opts := DataOptions{Task: TaskLM, VocabSize: 10}
	ds, err := ReadJSONL(strings.NewReader("\uFEFF{\"tokens\":[1,2]}\n{\"tokens\":[3,4]}\n"), "bom.jsonl", opts)
	if err != nil || ds.Len() != 2 {
		t.Fatalf("leading BOM: %v", err)
	}
	for _, c := range []struct {
		data, want string
	}{
		{"{\"tokens\":[1,2]}\n\uFEFF{\"tokens\":[3,4]}\n", "joined.jsonl:2: the line starts with a UTF-8 byte-order mark (U+FEFF)"},
		{"\xFF\xFE{\x00\"\x00", "joined.jsonl: the file is UTF-16"},
		{"\xFE\xFF\x00{\x00\"", "joined.jsonl: the file is UTF-16"},
		{"\xFF\xFE\x00\x00{\x00\x00\x00", "joined.jsonl: the file is UTF-32"},
		// Invalid UTF-8 inside a string is not replaced by U+FFFD.
		{"{\"tokens\":[1,2]}\n{\"text\":\"ab\xFF\xFE cd\"}\n", "joined.jsonl:2: not valid UTF-8 at byte 12 of the line"},
	} {
		_, err := ReadJSONL(strings.NewReader(c.data), "joined.jsonl", opts)
		var le *LineError
		if !errors.As(err, &le) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "invalid character") {
			t.Errorf("%q: %v, want %q", c.data, err, c.want)
		}
	}
}

// Fields no example form reads (extra columns, a misspelt "loss_msk") are
// recorded with the first line they are on, once each.
func TestReadJSONLIgnoredFields(t *testing.T) {
	opts := DataOptions{Task: TaskLM, VocabSize: 10}
	ds, err := ReadJSONL(strings.NewReader("{\"tokens\":[1,2]}\n{\"tokens\":[1,2],\"loss_msk\":[0,1],\"id\":3}\n{\"id\":4,\"tokens\":[3,4]}\n"), "x.jsonl", opts)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ds.IgnoredFields(), `"id" (first on line 2), "loss_msk" (first on line 2)`; got != want {
		t.Errorf("ignored fields %s, want %s", got, want)
	}
	// Field names are matched exactly: a line of "Tokens" has no tokens,
	// and the error says why.
	_, err = ReadJSONL(strings.NewReader("{\"tokens\":[1,2],\"loss_mask\":[0,1]}\n{\"Tokens\":[1,2],\"Loss_Mask\":[0,1]}\n"), "y.jsonl", opts)
	var le *LineError
	if !errors.As(err, &le) || le.Line != 2 || !strings.Contains(err.Error(), `field "Tokens": field names are case-sensitive, and "Tokens" is not "tokens"`) {
		t.Errorf("a line of \"Tokens\": %v", err)
	}
}
