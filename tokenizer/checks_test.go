package tokenizer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf16"
)

// The expected ids in this file come from Hugging Face's Rust tokenizers
// 0.22.2 through its Node binding (@anush008/tokenizers@0.6.0, as
// DEVELOPERS.md installs it): each tokenizer.json below was written out as
// it stands here and encoded with
//
//	(await Tokenizer.fromFile(f).encode(s, null, {addSpecialTokens: false})).getIds()
//
// Where the Rust library accepts a file that dstune refuses (clashing ids,
// duplicate entries, dropout), the test says so; those cases are derived
// by hand from the small vocabularies.

// checksBPE is a small BPE tokenizer.json; the two %s are the normalizer
// and the pre-tokenizer.
const checksBPE = `{"added_tokens":[{"id":0,"content":"<unk>","special":true,"normalized":false,"single_word":false,"lstrip":false,"rstrip":false},` +
	`{"id":1,"content":"<s>","special":true,"normalized":false,"single_word":false,"lstrip":false,"rstrip":false}],` +
	`"normalizer":%s,"pre_tokenizer":%s,"model":{"type":"BPE","unk_token":"<unk>",` +
	`"vocab":{"<unk>":0,"<s>":1,"a":2,"b":3,"c":4,"ab":5,"abc":6,"bc":7,"d":8," ":9,"日":10,"本":11,"e":12},"merges":["a b","ab c","b c"]}}`

func parseChecks(t *testing.T, js string) *Tokenizer {
	t.Helper()
	tk, err := ParseHF("checks.json", []byte(js), nil)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// A Split pre-tokenizer with the empty String pattern isolates every
// character, as in the Rust library (which makes a regex of the escaped
// string; the empty regex matches before each character), whatever the
// behavior; with invert and Removed nothing is left. dstune used not to
// split at all.
func TestSplitEmptyString(t *testing.T) {
	strs := []string{"abc abcd", "a", "日本", "ab  c", ""}
	each := [][]int{{2, 3, 4, 9, 2, 3, 4, 8}, {2}, {10, 11}, {2, 3, 9, 9, 4}, {}}
	none := [][]int{{}, {}, {}, {}, {}}
	for _, behavior := range []string{"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"} {
		for _, invert := range []bool{false, true} {
			want := each
			if behavior == "Removed" && invert {
				want = none
			}
			pre := fmt.Sprintf(`{"type":"Split","pattern":{"String":""},"behavior":%q,"invert":%v}`, behavior, invert)
			tk := parseChecks(t, fmt.Sprintf(checksBPE, "null", pre))
			for i, s := range strs {
				if got := tk.Encode(s, false); !slices.Equal(got, want[i]) && len(got)+len(want[i]) > 0 {
					t.Errorf("%s invert %v: %q → %v, want %v", behavior, invert, s, got, want[i])
				}
			}
		}
	}
	// Replace with the empty String inserts its content at every
	// position, end included, but not into empty text (a Replace that
	// left nothing is not applied again).
	for _, c := range []struct {
		normalizer string
		strs       []string
		want       [][]int
	}{
		{`{"type":"Replace","pattern":{"String":""},"content":"e"}`, strs,
			[][]int{{12, 2, 12, 3, 12, 4, 12, 9, 12, 2, 12, 3, 12, 4, 12, 8, 12}, {12, 2, 12}, {12, 10, 12, 11, 12}, {12, 2, 12, 3, 12, 9, 12, 9, 12, 4, 12}, {}}},
		{`{"type":"Sequence","normalizers":[{"type":"Replace","pattern":{"String":" "},"content":""},{"type":"Replace","pattern":{"String":""},"content":"d"}]}`,
			[]string{" ", "a b", "  "}, [][]int{{}, {8, 2, 8, 3, 8}, {}}},
		{`{"type":"Sequence","normalizers":[{"type":"Replace","pattern":{"String":" "},"content":""},{"type":"Replace","pattern":{"Regex":"x*"},"content":"d"}]}`,
			[]string{" ", "a b"}, [][]int{{}, {8, 2, 8, 3, 8}}},
	} {
		tk := parseChecks(t, fmt.Sprintf(checksBPE, c.normalizer, "null"))
		for i, s := range c.strs {
			if got := tk.Encode(s, false); !slices.Equal(got, c.want[i]) && len(got)+len(c.want[i]) > 0 {
				t.Errorf("%s: %q → %v, want %v", c.normalizer, s, got, c.want[i])
			}
		}
	}
}

// BPE dropout drops merges at random while encoding, a training-time
// augmentation: the Rust library applies it ("abc abcd" with dropout 1
// gives [2,3,4,9,2,3,4,8], no merges) and dstune, which does not, refuses
// the file instead of encoding differently.
func TestBPEDropoutRefused(t *testing.T) {
	for _, dropout := range []string{"null", "0", "0.0"} {
		js := strings.Replace(fmt.Sprintf(checksBPE, "null", "null"), `"type":"BPE",`, `"type":"BPE","dropout":`+dropout+`,`, 1)
		if got := parseChecks(t, js).Encode("abc abcd", false); !slices.Equal(got, []int{6, 9, 6, 8}) {
			t.Errorf("dropout %s: %v, want [6 9 6 8]", dropout, got)
		}
	}
	for _, dropout := range []string{"1.0", "0.1"} {
		js := strings.Replace(fmt.Sprintf(checksBPE, "null", "null"), `"type":"BPE",`, `"type":"BPE","dropout":`+dropout+`,`, 1)
		_, err := ParseHF("drop.json", []byte(js), nil)
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Part != "model" || !strings.Contains(err.Error(), "BPE dropout is a training-time augmentation dstune does not apply") {
			t.Errorf("dropout %s: error %v", dropout, err)
		}
	}
}

// An added token with the id of another vocabulary entry, or two added
// tokens sharing an id, made an id stand for two tokens (encode "banana"
// → a's id, decode → "<|x|>"). The Rust library renumbers such tokens
// silently; dstune refuses the file, naming the token, the id and both
// contents. An added token that is its vocabulary entry (same id, same
// content), or one listed twice alike, is normal.
func TestAddedTokenClashes(t *testing.T) {
	added := func(entries ...string) string {
		js := fmt.Sprintf(checksBPE, "null", "null")
		for _, e := range entries {
			id, content, _ := strings.Cut(e, " ")
			js = strings.Replace(js, `}],"normalizer"`, fmt.Sprintf(`},{"id":%s,"content":%q,"special":false,"normalized":false}],"normalizer"`, id, content), 1)
		}
		return js
	}
	// Accepted: the Rust library gives "ab<x>" [5, 13] without the added
	// "a", [2, 3, 13] with it (an added token is found before merges).
	tk := parseChecks(t, added("13 <x>", "13 <x>"))
	if got := tk.Encode("ab<x>", false); !slices.Equal(got, []int{5, 13}) {
		t.Errorf("ab<x> → %v, want [5 13]", got)
	}
	tk = parseChecks(t, added("13 <x>", "13 <x>", "2 a"))
	if got := tk.Encode("ab<x>", false); !slices.Equal(got, []int{2, 3, 13}) {
		t.Errorf("ab<x> with an added \"a\" → %v, want [2 3 13]", got)
	}
	for _, c := range []struct {
		js, part, want string
	}{
		{added("2 <|x|>"), "added_tokens[2]", `id 2 ("<|x|>") is already the vocabulary's token "a"`},
		{added("20 <x>", "20 <y>"), "added_tokens[3]", `id 20 ("<y>") is also added_tokens[2] ("<x>")`},
		{added("20 a"), "added_tokens[2]", `"a" has id 20 here and 2 in the vocabulary`},
		{added("20 <x>", "21 <x>"), "added_tokens[3]", `"<x>" has id 21 here and 20 in added_tokens[2]`},
	} {
		_, err := ParseHF("clash.json", []byte(c.js), nil)
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Part != c.part || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want %s: %s", err, c.part, c.want)
		}
	}
}

// A vocabulary entry listed twice: a Unigram piece (dstune kept the first
// id, the Rust library the last), or two BPE, WordPiece or WordLevel
// tokens with one id (decoding gave one of them). Both are refused,
// naming both.
func TestDuplicateVocabulary(t *testing.T) {
	for _, c := range []struct {
		model, part, want string
	}{
		{`{"type":"Unigram","unk_id":0,"vocab":[["<unk>",0],["ab",-4],["c",-1],["ab",-1]]}`, "model", `vocab[3]: piece "ab" is also vocab[1]`},
		{`{"type":"BPE","vocab":{"a":0,"b":1,"zz":1,"ab":1},"merges":[]}`, "model.vocab", `"ab" and "b" both have id 1`},
		{`{"type":"WordPiece","unk_token":"[UNK]","vocab":{"[UNK]":0,"a":1,"##a":1}}`, "model.vocab", `"##a" and "a" both have id 1`},
		{`{"type":"WordLevel","unk_token":"u","vocab":{"u":0,"x":2,"y":2}}`, "model.vocab", `"x" and "y" both have id 2`},
		{`{"type":"Unigram","unk_id":null,"vocab":[]}`, "model", "vocab is empty"},
	} {
		_, err := ParseHF("dup.json", []byte(`{"model":`+c.model+`}`), nil)
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Part != c.part || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %s: %s", c.model, err, c.part, c.want)
		}
	}
}

// A Unigram model without unk_id cannot encode a character for which it
// has no one-character piece: the Rust library fails ("Encountered an
// unknown token but `unk_id` is missing") where its lattice would reach a
// position through the unknown character, even when a longer piece
// covers it ("ab" below), and even with byte fallback. dstune dropped the
// character silently; EncodeChecked now fails naming it.
func TestUnigramWithoutUnk(t *testing.T) {
	bytePieces := ""
	for b := range 256 {
		bytePieces += fmt.Sprintf(`,["<0x%02X>",-10.0]`, b)
	}
	for _, c := range []struct {
		model string
		ok    map[string][]int
		fail  map[string]string // text → what the error names
	}{
		{`{"type":"Unigram","unk_id":null,"vocab":[["ab",-1.0],["c",-1.0]]}`,
			map[string][]int{"c": {1}, "": {}},
			map[string]string{"ab": `"a" (U+0061) at byte 0 of the word "ab"`, "cx": `"x" (U+0078) at byte 1 of the word "cx"`, "abc": `"a"`}},
		{`{"type":"Unigram","unk_id":null,"vocab":[["x",-1.0],["xa",-1.0],["b",-1.0]]}`,
			map[string][]int{"xab": {1, 2}, "xb": {0, 2}},
			map[string]string{"a": `"a" (U+0061)`}},
		{`{"type":"Unigram","unk_id":null,"byte_fallback":true,"vocab":[["ab",-1.0],["c",-1.0]` + bytePieces + `]}`,
			map[string][]int{"c": {1}},
			map[string]string{"x": `"x" (U+0078)`}},
		{`{"type":"Unigram","unk_id":0,"vocab":[["<unk>",0.0],["ab",-1.0],["c",-1.0]]}`,
			map[string][]int{"cx": {2, 0}, "ab": {1}}, nil},
	} {
		tk := parseChecks(t, `{"model":`+c.model+`}`)
		for s, want := range c.ok {
			got, err := tk.EncodeChecked(s, false)
			if err != nil || !slices.Equal(got, want) && len(got)+len(want) > 0 {
				t.Errorf("%s: %q → %v, %v; want %v", c.model, s, got, err, want)
			}
		}
		for s, want := range c.fail {
			got, err := tk.EncodeChecked(s, false)
			if err == nil || got != nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "checks.json: ") || !strings.Contains(err.Error(), "no unk_id") {
				t.Errorf("%s: %q → %v, %v; want an error naming %s", c.model, s, got, err, want)
			}
			// The error is not cached away: asking again fails again.
			if _, err := tk.EncodeChecked(s, false); err == nil {
				t.Errorf("%s: %q encodes the second time", c.model, s)
			}
		}
	}
}

// Load says what a file that is neither a tokenizer.json object nor a
// llama2.c tokenizer.bin is, instead of reading it as a tokenizer.bin
// ("max_token_length 841757019 out of range"); a tokenizer.json with a
// UTF-8 byte-order mark loads.
func TestLoadNamesFileKind(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := fmt.Sprintf(checksBPE, "null", "null")
	utf16le := []byte{0xFF, 0xFE}
	for _, u := range utf16.Encode([]rune(good)) {
		utf16le = append(utf16le, byte(u), byte(u>>8))
	}
	var utf16be []byte // without a byte-order mark
	for _, u := range utf16.Encode([]rune(good)) {
		utf16be = append(utf16be, byte(u>>8), byte(u))
	}
	for _, c := range []struct {
		name, data, want string
	}{
		{"empty.json", "", "empty.json: the file is empty"},
		{"blank.json", " \n", "blank.json: the file holds only white space"},
		{"array.json", "[1,2,3]", "array.json: the file is JSON but an array, not an object"},
		{"string.bin", `"tokenizer"`, "string.bin: the file is JSON but a string, not an object"},
		{"short.json", "[]", "short.json: the file is JSON but an array, not an object"},
		{"le.json", string(utf16le), "le.json: the file is UTF-16 text: a tokenizer.json must be UTF-8 (save it as UTF-8)"},
		{"be.json", string(utf16be), "be.json: the file is UTF-16 text"},
		{"text.json", "hello, world", "text.json: not a tokenizer.json: invalid character 'h'"},
	} {
		_, err := Load(write(c.name, []byte(c.data)))
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "llama2.c") && c.name != "empty.json" && c.name != "blank.json" {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
	bom, err := Load(write("bom.json", append([]byte("\uFEFF"), good...)))
	if err != nil {
		t.Fatalf("tokenizer.json with a byte-order mark: %v", err)
	}
	if got := bom.Encode("abc abcd", false); !slices.Equal(got, []int{6, 9, 6, 8}) {
		t.Errorf("with a byte-order mark: %v, want [6 9 6 8]", got)
	}
	if _, err := ParseHF("bom.json", append([]byte("\uFEFF"), good...), nil); err != nil {
		t.Errorf("ParseHF with a byte-order mark: %v", err)
	}
	// A tokenizer.bin is one, whatever its name.
	for _, name := range []string{"tok.bin", "tok.json", "tokenizer"} {
		tk, err := Load(write(name, tinyLlama2CFile()))
		if err != nil || tk.Kind() != "llama2.c" {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestNormalizerGrowthIsBounded: normalizers that make the text longer
// (a replacement by a long string, three of them in a row) are refused
// before they build more than maxNormalizedBytes — a 7 KB tokenizer.json
// made 16 GB of two bytes — and say so; within the limit they apply.
func TestNormalizerGrowthIsBounded(t *testing.T) {
	defer func(was int64) { maxNormalizedBytes = was }(maxNormalizedBytes)
	maxNormalizedBytes = 1 << 20
	replace := `{"type":"Replace","pattern":{"String":"a"},"content":"` + strings.Repeat("a", 1000) + `"}`
	model := `"model":{"type":"WordLevel","vocab":{"[UNK]":0,"b":1},"unk_token":"[UNK]"}`
	tk := parseChecks(t, `{"normalizer":{"type":"Sequence","normalizers":[`+replace+`,`+replace+`,`+replace+`]},`+model+`}`)
	if ids, err := tk.EncodeChecked("b", false); err != nil || !slices.Equal(ids, []int{1}) {
		t.Errorf("b → %v, %v; want [1]", ids, err)
	}
	// One replacement makes 1000 bytes, the second 10⁶, the third would
	// make 10⁹.
	ids, err := tk.EncodeChecked("a", false)
	if err == nil || ids != nil || !strings.Contains(err.Error(), "checks.json: ") || !strings.Contains(err.Error(), "as many as 1000000000, more than the 1048576 allowed") {
		t.Errorf("a → %v, %v; want an error naming the limit", ids, err)
	}
	// An added token's content is normalized when the file loads.
	_, err = ParseHF("added.json", []byte(`{"normalizer":`+replace+`,"added_tokens":[{"id":2,"content":"`+strings.Repeat("a", 2000)+`","normalized":true}],`+model+`}`), nil)
	if err == nil || !strings.Contains(err.Error(), "more than the 1048576 allowed") {
		t.Errorf("an added token normalized past the limit: %v", err)
	}
}
