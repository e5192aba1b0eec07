package tokenizer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/onnx"
)

func loadStories260K(t testing.TB) *Tokenizer {
	t.Helper()
	tk, err := Load(sharedtest.Path(t, "models", "stories260K", "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// TestLlama2CStories260KGreedyText decodes the model's greedy tokens
// (test_data_set_1: BOS and 40 generated tokens) and compares with the
// text its README gives.
func TestLlama2CStories260KGreedyText(t *testing.T) {
	tk := loadStories260K(t)
	if tk.VocabSize() != 512 || tk.BOS() != 1 || tk.EOS() != 2 || tk.Kind() != "llama2.c" {
		t.Fatalf("vocab %d, BOS %d, EOS %d, kind %s; want 512, 1, 2, llama2.c", tk.VocabSize(), tk.BOS(), tk.EOS(), tk.Kind())
	}
	in, err := onnx.ReadTensorFile(sharedtest.Path(t, "models", "stories260K", "test_data_set_1", "input_0.pb"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := in.Int64s()
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int, len(raw))
	for i, v := range raw {
		ids[i] = int(v)
	}
	want, err := os.ReadFile(sharedtest.Path(t, "models", "stories260K", "generated.txt"))
	if err != nil {
		t.Fatal(err)
	}
	wantText := strings.TrimRight(string(want), "\n")
	if ids[0] != 1 || len(ids) != 41 {
		t.Fatalf("input starts %v (%d ids), want BOS and 40 tokens", ids[:1], len(ids))
	}
	if got := tk.Decode(ids, true); got != wantText {
		t.Errorf("Decode:\n got %q\nwant %q", got, wantText)
	}
	// Stream decoding gives the same text, piece by piece.
	st := tk.NewStream(true)
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(st.Next(id))
	}
	b.WriteString(st.Flush())
	if b.String() != wantText {
		t.Errorf("stream:\n got %q\nwant %q", b.String(), wantText)
	}
	// The generated text re-encodes to tokens that decode to it.
	if got := tk.Decode(tk.Encode(wantText, true), true); got != wantText {
		t.Errorf("round trip: %q", got)
	}
}

// naiveLlama2CEncode is llama2.c's encode() loop as written there: O(n²)
// pair scans, kept here as the reference for the priority-queue version.
func naiveLlama2CEncode(m *llama2cModel, text string, bos bool) []int {
	sorted := slices.Clone(m.pieces)
	sort.Strings(sorted)
	lookup := func(s string) int {
		i := sort.SearchStrings(sorted, s)
		if i < len(sorted) && sorted[i] == s {
			return m.ids[s]
		}
		return -1
	}
	var tokens []int
	if bos {
		tokens = append(tokens, 1)
	}
	if text == "" {
		return tokens
	}
	start := len(tokens)
	tokens = append(tokens, lookup(" "))
	var buf []byte
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c&0xC0 != 0x80 {
			buf = buf[:0]
		}
		buf = append(buf, c)
		if i+1 < len(text) && text[i+1]&0xC0 == 0x80 && len(buf) < 4 {
			continue
		}
		if id := lookup(string(buf)); id != -1 {
			tokens = append(tokens, id)
		} else {
			for _, b := range buf {
				tokens = append(tokens, int(b)+3)
			}
		}
		buf = buf[:0]
	}
	for {
		bestScore, bestID, bestIdx := float32(-1e10), -1, -1
		for i := start; i+1 < len(tokens); i++ {
			id := lookup(m.pieces[tokens[i]] + m.pieces[tokens[i+1]])
			if id != -1 && m.scores[id] > bestScore {
				bestScore, bestID, bestIdx = m.scores[id], id, i
			}
		}
		if bestIdx == -1 {
			break
		}
		tokens[bestIdx] = bestID
		tokens = slices.Delete(tokens, bestIdx+1, bestIdx+2)
	}
	return tokens
}

// TestLlama2CEncodeMatchesLoop compares Encode with llama2.c's own loop
// on the reference strings and checks that decoding gives them back.
func TestLlama2CEncodeMatchesLoop(t *testing.T) {
	tk := loadStories260K(t)
	strs, err := refStrings()
	if err != nil {
		t.Fatal(err)
	}
	if testing.Short() {
		strs = strs[:400]
	}
	for i, s := range strs {
		got := tk.Encode(s, true)
		if len(s) < 2000 {
			if want := naiveLlama2CEncode(tk.llama, s, true); !slices.Equal(got, want) {
				t.Errorf("string %d %q:\n got %v\nwant %v", i, s, got, want)
			}
		}
		if dec := tk.Decode(got, true); dec != s {
			t.Errorf("string %d: decode(encode(%q)) = %q", i, s, dec)
		}
	}
}

// llama2cFile writes a tokenizer.bin with the given pieces and scores.
func llama2cFile(maxLen int32, pieces []string, scores []float32) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, maxLen)
	for i, p := range pieces {
		binary.Write(&b, binary.LittleEndian, scores[i])
		binary.Write(&b, binary.LittleEndian, int32(len(p)))
		b.WriteString(p)
	}
	return b.Bytes()
}

func TestLlama2CMalformed(t *testing.T) {
	good := tinyLlama2CFile()
	if _, err := ParseLlama2C("good.bin", good); err != nil {
		t.Fatalf("valid file refused: %v", err)
	}
	nan := llama2cFile(3, []string{"a", "b", "c"}, []float32{0, float32(math.NaN()), 0})
	cases := map[string][]byte{
		"empty":            nil,
		"short header":     {1, 0},
		"zero max length":  llama2cFile(0, []string{"a", "b", "c"}, []float32{0, 0, 0}),
		"huge max length":  append([]byte{0xff, 0xff, 0xff, 0x7f}, good[4:]...),
		"truncated score":  good[:len(good)-9],
		"truncated bytes":  good[:len(good)-1],
		"length too long":  llama2cFile(1, []string{"a", "bb", "c"}, []float32{0, 0, 0}),
		"negative length":  append(slices.Clone(good[:8]), 0xff, 0xff, 0xff, 0xff),
		"NaN score":        nan,
		"too few tokens":   llama2cFile(3, []string{"a"}, []float32{0}),
		"length past file": append(slices.Clone(good[:8]), 3, 0, 0, 0, 'x'),
	}
	for name, data := range cases {
		_, err := ParseLlama2C("bad.bin", data)
		var fe *FormatError
		if err == nil || !errors.Is(err, ErrMalformed) || !errors.As(err, &fe) || fe.File != "bad.bin" {
			t.Errorf("%s: error %v, want a FormatError naming bad.bin", name, err)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
}

// TestFitsModel: stories260K's 512-token tokenizer fits its model, is
// refused for a model of fewer ids, and warned of for one of far more.
func TestFitsModel(t *testing.T) {
	tk, err := Load(sharedtest.Path(t, "models", "stories260K", "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		vocab         int
		warning, fail string
	}{
		{512, "", ""}, {0, "", ""}, {560, "", ""},
		{511, "", "has 512 token ids, more than the model's vocabulary of 511"},
		{32000, "has 512 token ids, the model's vocabulary 32000", ""},
	} {
		warning, err := tk.FitsModel(c.vocab)
		if (c.fail == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.fail) {
			t.Errorf("vocab %d: error %v, want %q", c.vocab, err, c.fail)
		}
		if (c.warning == "") != (warning == "") || !strings.Contains(warning, c.warning) {
			t.Errorf("vocab %d: warning %q, want %q", c.vocab, warning, c.warning)
		}
	}
}

// llama2cPieces returns <unk>, BOS, EOS, the 256 byte tokens and extra.
func llama2cPieces(extra ...string) []string {
	pieces := []string{"<unk>", "\n<s>\n", "\n</s>\n"}
	for b := range 256 {
		pieces = append(pieces, fmt.Sprintf("<0x%02X>", b))
	}
	return append(pieces, extra...)
}

// TestLlama2CByteTokens: byte fallback emits byte b as id b+3, so a
// tokenizer.bin whose ids 3..258 are not <0x00>..<0xFF> (a file cut short
// after 100 tokens, or one with another token in their place) is refused,
// naming the first wrong id, instead of giving ids that are not its tokens
// (the cut file encoded "Once" to ids past its end and lost the letters).
func TestLlama2CByteTokens(t *testing.T) {
	scores := func(n int) []float32 { return make([]float32, n) }
	full := llama2cPieces(" ", "a", "b", " a")
	if _, err := ParseLlama2C("full.bin", llama2cFile(8, full, scores(len(full)))); err != nil {
		t.Fatalf("complete file refused: %v", err)
	}
	lower := slices.Clone(full)
	lower[3+0xAB] = "<0xab>" // llama2.c's decode reads either case
	if _, err := ParseLlama2C("lower.bin", llama2cFile(8, lower, scores(len(lower)))); err != nil {
		t.Errorf("lower-case hex refused: %v", err)
	}
	wrong := slices.Clone(full)
	wrong[3+'A'] = "A"
	for _, c := range []struct {
		name   string
		pieces []string
		want   string
	}{
		{"cut.bin", full[:100], "cut.bin: byte 1402: the file ends after 100 tokens: ids 3..258 must be the byte tokens <0x00>..<0xFF>, and id 100 (<0x61>) is missing; is the file cut short?"},
		{"cut3.bin", full[:3], "the file ends after 3 tokens"},
		{"wrong.bin", wrong, `wrong.bin: byte 954: token 68 is "A", want the byte token <0x41>`},
		{"long.bin", append(slices.Clone(full[:10]), append([]string{"<0x077>"}, full[11:]...)...), `token 10 is "<0x077>", want the byte token <0x07>`},
	} {
		_, err := ParseLlama2C(c.name, llama2cFile(8, c.pieces, scores(len(c.pieces))))
		if !errors.Is(err, ErrMalformed) || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}

// TestLlama2CEncodeInVocabulary: every id Encode gives is a token of the
// file, byte fallback included (stories260K's tok512.bin).
func TestLlama2CEncodeInVocabulary(t *testing.T) {
	tk := loadStories260K(t)
	for _, s := range []string{"Once upon a time, Zoë said 日本 \x00\x7f", "\U0001F600\U0001F44D"} {
		for _, id := range tk.Encode(s, true) {
			if id < 0 || id >= tk.VocabSize() {
				t.Errorf("%q: id %d outside the vocabulary of %d", s, id, tk.VocabSize())
			}
		}
		if got := tk.Decode(tk.Encode(s, true), true); got != s {
			t.Errorf("round trip of %q: %q", s, got)
		}
	}
}
