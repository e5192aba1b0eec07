package tokenizer

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// tinyByteLevelJSON is a small GPT-2-style tokenizer.json: the 256 byte
// symbols, a few merges, an added special token and the ByteLevel
// pre-tokenizer and decoder.
func tinyByteLevelJSON() []byte {
	vocab := map[string]int{}
	for b := 0; b < 256; b++ {
		vocab[byteToString[b]] = b
	}
	merges := [][2]string{{"Ġ", "t"}, {"h", "e"}, {"Ġt", "he"}, {"i", "n"}, {"Ġ", "a"}, {"e", "r"}, {"Ġa", "n"}, {"Ġan", "d"}}
	for _, m := range merges {
		vocab[m[0]+m[1]] = len(vocab)
	}
	var ms []string
	for _, m := range merges {
		ms = append(ms, m[0]+" "+m[1])
	}
	j := map[string]any{
		"added_tokens": []any{map[string]any{"id": len(vocab), "content": "<|endoftext|>", "special": true,
			"normalized": false, "lstrip": false, "rstrip": false, "single_word": false}},
		"normalizer":     nil,
		"pre_tokenizer":  map[string]any{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
		"post_processor": map[string]any{"type": "ByteLevel"},
		"decoder":        map[string]any{"type": "ByteLevel"},
		"model":          map[string]any{"type": "BPE", "vocab": vocab, "merges": ms},
	}
	data, err := json.Marshal(j)
	if err != nil {
		panic(err)
	}
	return data
}

func TestTinyByteLevel(t *testing.T) {
	tk, err := ParseHF("tiny.json", tinyByteLevelJSON(), nil)
	if err != nil {
		t.Fatal(err)
	}
	the, _ := tk.TokenID("Ġthe")
	and, _ := tk.TokenID("Ġand")
	eot, _ := tk.TokenID("<|endoftext|>")
	got := tk.Encode("in the<|endoftext|> and", true)
	want := []int{tk.ids["in"], the, eot, and}
	if !slices.Equal(got, want) {
		t.Fatalf("Encode = %v, want %v", got, want)
	}
	if tk.EOS() != eot || tk.BOS() != eot || !tk.IsSpecial(eot) || tk.VocabSize() != eot+1 {
		t.Errorf("EOS %d BOS %d special %v size %d", tk.EOS(), tk.BOS(), tk.IsSpecial(eot), tk.VocabSize())
	}
	if s := tk.Decode(got, true); s != "in the and" {
		t.Errorf("Decode skipping specials = %q", s)
	}
	if s := tk.Token(the); s != "Ġthe" {
		t.Errorf("Token = %q", s)
	}
	if s := tk.Decode([]int{-1, 1 << 30, the}, false); s != " the" {
		t.Errorf("Decode with ids out of range = %q", s)
	}
}

func TestParseHFMalformed(t *testing.T) {
	good := map[string]json.RawMessage{}
	if err := json.Unmarshal(tinyByteLevelJSON(), &good); err != nil {
		t.Fatal(err)
	}
	with := func(key, value string) []byte {
		m := map[string]json.RawMessage{}
		for k, v := range good {
			m[k] = v
		}
		m[key] = json.RawMessage(value)
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	cases := []struct {
		name string
		data []byte
		part string
	}{
		{"not JSON", []byte("{"), ""},
		{"no model", with("model", "null"), "model"},
		{"unknown model", with("model", `{"type":"Magic"}`), "model"},
		{"merge out of vocabulary", with("model", `{"type":"BPE","vocab":{"a":0},"merges":["a b"]}`), "model"},
		{"bad merge string", with("model", `{"type":"BPE","vocab":{"a":0},"merges":["a"]}`), "model"},
		{"negative id", with("model", `{"type":"BPE","vocab":{"a":-1},"merges":[]}`), "model"},
		{"huge id", with("model", `{"type":"BPE","vocab":{"a":999999999},"merges":[]}`), "model"},
		{"sparse ids", with("model", `{"type":"WordLevel","vocab":{"a":5000000},"unk_token":"a"}`), "model.vocab"},
		{"missing unk", with("model", `{"type":"WordPiece","vocab":{"a":0},"unk_token":"[UNK]"}`), "model"},
		{"unigram bad entry", with("model", `{"type":"Unigram","vocab":[["a"]],"unk_id":0}`), "model"},
		{"unigram unk out of range", with("model", `{"type":"Unigram","vocab":[["a",-1]],"unk_id":3}`), "model"},
		{"unigram score not a number", with("model", `{"type":"Unigram","vocab":[["a","x"]],"unk_id":0}`), "model"},
		{"bad regex", with("pre_tokenizer", `{"type":"Split","pattern":{"Regex":"(a"},"behavior":"Isolated"}`), "pre_tokenizer"},
		{"back-reference", with("pre_tokenizer", `{"type":"Split","pattern":{"Regex":"(a)\\1"},"behavior":"Isolated"}`), "pre_tokenizer"},
		{"unknown property", with("pre_tokenizer", `{"type":"Split","pattern":{"Regex":"\\p{Klingon}"},"behavior":"Isolated"}`), "pre_tokenizer"},
		{"variable look-behind", with("pre_tokenizer", `{"type":"Split","pattern":{"Regex":"(?<=a+)b"},"behavior":"Isolated"}`), "pre_tokenizer"},
		{"bad behavior", with("pre_tokenizer", `{"type":"Split","pattern":{"String":" "},"behavior":"Sideways"}`), "pre_tokenizer"},
		{"unknown pre-tokenizer", with("pre_tokenizer", `{"type":"Magic"}`), "pre_tokenizer"},
		{"unknown normalizer", with("normalizer", `{"type":"Magic"}`), "normalizer"},
		{"metaspace replacement", with("pre_tokenizer", `{"type":"Metaspace","replacement":"ab"}`), "pre_tokenizer"},
		{"deep sequence", with("normalizer", strings.Repeat(`{"type":"Sequence","normalizers":[`, 40)+strings.Repeat(`]}`, 40)), "normalizer"},
		{"template unknown token", with("post_processor", `{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<x>","type_id":0}}],"pair":[],"special_tokens":{}}`), "post_processor"},
		{"template id out of range", with("post_processor", `{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<x>","type_id":0}}],"pair":[],"special_tokens":{"<x>":{"id":"<x>","ids":[100000],"tokens":["<x>"]}}}`), "post_processor"},
		{"template bad sequence", with("post_processor", `{"type":"TemplateProcessing","single":[{"Sequence":{"id":"C","type_id":0}}],"pair":[],"special_tokens":{}}`), "post_processor"},
		{"strip count", with("decoder", `{"type":"Strip","content":" ","start":-1,"stop":0}`), "decoder"},
		{"unknown decoder", with("decoder", `{"type":"Magic"}`), "decoder"},
		{"added token without id", with("added_tokens", `[{"content":"x"}]`), "added_tokens[0]"},
		{"added token id", with("added_tokens", `[{"id":-5,"content":"x"}]`), "added_tokens[0]"},
		{"precompiled charsmap", with("normalizer", `{"type":"Precompiled","precompiled_charsmap":"AAAA"}`), "normalizer"},
	}
	for _, c := range cases {
		_, err := ParseHF("bad.json", c.data, nil)
		var fe *FormatError
		if err == nil || !errors.Is(err, ErrMalformed) || !errors.As(err, &fe) || fe.File != "bad.json" || fe.Part != c.part {
			t.Errorf("%s: error %v, want a FormatError for bad.json at %q", c.name, err, c.part)
			continue
		}
		t.Logf("%s: %v", c.name, err)
	}
}

// FuzzParseHF feeds arbitrary bytes to the tokenizer.json reader: it
// returns an error or a tokenizer that encodes and decodes without
// panicking.
func FuzzParseHF(f *testing.F) {
	f.Add(tinyByteLevelJSON())
	f.Add([]byte(`{"model":{"type":"Unigram","vocab":[["a",-1],["b",-2],["ab",-0.5]],"unk_id":0},"pre_tokenizer":{"type":"Metaspace"},"decoder":{"type":"Metaspace"}}`))
	f.Add([]byte(`{"model":{"type":"WordPiece","vocab":{"[UNK]":0,"a":1,"##b":2}},"normalizer":{"type":"BertNormalizer"},"pre_tokenizer":{"type":"BertPreTokenizer"},"decoder":{"type":"WordPiece"}}`))
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2,"<0x41>":3},"merges":[["a","b"]],"byte_fallback":true},"pre_tokenizer":{"type":"Split","pattern":{"Regex":"(?i:'s)|\\s+(?!\\S)|\\p{L}+"},"behavior":"MergedWithNext"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tk, err := ParseHF("fuzz.json", data, nil)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		for _, s := range []string{"", "a b", "ab  AB's\n\t1234 日本 😀 <|endoftext|>", "\xff\xfe"} {
			ids := tk.Encode(s, true)
			tk.Decode(ids, false)
			tk.Decode(ids, true)
			tk.EncodePair(s, s, true)
			st := tk.NewStream(false)
			for _, id := range ids {
				st.Next(id)
			}
			st.Flush()
		}
	})
}

// FuzzEncodeDecodeRoundTrip checks that byte-level BPE and llama2.c's
// tokenizer give back any valid UTF-8 text, and that streaming gives what
// Decode gives.
func FuzzEncodeDecodeRoundTrip(f *testing.F) {
	byteLevel, err := ParseHF("tiny.json", tinyByteLevelJSON(), nil)
	if err != nil {
		f.Fatal(err)
	}
	llama, err := ParseLlama2C("tiny.bin", tinyLlama2CFile())
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"", "the and", "  in\n\n\tthe  ", "日本語 😀👍🏽", "e\u0301", "\x00\x7f", "'s 's"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, tk := range []*Tokenizer{byteLevel, llama} {
			ids := tk.Encode(s, true)
			got := tk.Decode(ids, true)
			if utf8.ValidString(s) && !strings.Contains(s, "<|endoftext|>") && got != s {
				t.Errorf("%s: Decode(Encode(%q)) = %q (ids %v)", tk.Kind(), s, got, ids)
			}
			if !utf8.ValidString(got) {
				t.Errorf("%s: Decode gave invalid UTF-8 %q", tk.Kind(), got)
			}
			st := tk.NewStream(true)
			var b strings.Builder
			for _, id := range ids {
				b.WriteString(st.Next(id))
			}
			b.WriteString(st.Flush())
			if b.String() != got {
				t.Errorf("%s: stream %q, Decode %q", tk.Kind(), b.String(), got)
			}
		}
	})
}

// tinyLlama2CFile is a llama2.c tokenizer.bin with byte tokens and a few
// merges.
func tinyLlama2CFile() []byte {
	pieces := []string{"<unk>", "\n<s>\n", "\n</s>\n"}
	for b := 0; b < 256; b++ {
		pieces = append(pieces, "<0x"+strings.ToUpper(string("0123456789abcdef"[b>>4])+string("0123456789abcdef"[b&15]))+">")
	}
	pieces = append(pieces, " ", "t", "h", "e", "th", "the", " the", "a", " a", "日", "本")
	scores := make([]float32, len(pieces))
	for i := range scores {
		scores[i] = float32(-i)
	}
	return llama2cFile(16, pieces, scores)
}

// FuzzParseLlama2C feeds arbitrary bytes to the tokenizer.bin reader.
func FuzzParseLlama2C(f *testing.F) {
	f.Add(tinyLlama2CFile())
	f.Add([]byte{7, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		tk, err := ParseLlama2C("fuzz.bin", data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		for _, s := range []string{"", "the a", "日本 \xff"} {
			ids := tk.Encode(s, true)
			for _, id := range ids {
				if id < 0 || id >= tk.VocabSize() {
					t.Fatalf("Encode(%q) gave id %d, outside the vocabulary of %d", s, id, tk.VocabSize())
				}
			}
			tk.Decode(ids, false)
		}
	})
}

// FuzzRegex compiles arbitrary patterns and checks that matching stays in
// bounds and moves forward.
func FuzzRegex(f *testing.F) {
	for _, p := range []string{gpt2Pattern, `(?i:'s|'t)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
		`(a|b)*?c`, `(?>a+)b`, `(?<!x)y`, `[[:alpha:]&&[^aeiou]]+`, `^$`, `\b\w+\b`, `(|a)*`, `(a*)*b`} {
		f.Add(p, "aab cc's  \n x1234 'S ünï")
	}
	f.Fuzz(func(t *testing.T, pat, s string) {
		re, err := compileRegex(pat)
		if err != nil {
			return
		}
		last := 0
		re.findAll(s, func(start, end int) {
			if start < last || end < start || end > len(s) {
				t.Fatalf("pattern %q on %q: match [%d,%d) after %d", pat, s, start, end, last)
			}
			last = end
		})
	})
}

// FuzzPrecompiled reads arbitrary bytes as a sentencepiece charsmap: an
// error or a normalizer that stays within the table.
func FuzzPrecompiled(f *testing.F) {
	f.Add([]byte{8, 0, 0, 0, 0, 4, 0, 0, 0x61, 1, 0, 0, 'b', 0})
	f.Add([]byte{4, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := newPrecompiled(base64.StdEncoding.EncodeToString(data))
		if err != nil {
			return
		}
		for _, s := range []string{"", "abc", "a\u0301\u0302 🇺🇸🇫🇷 👨‍👩‍👧 \r\n각", "\xff"} {
			n.normalize(s)
		}
	})
}

// TestPrecompiledGraphemes checks the grapheme clusters the precompiled
// normalizer works on.
func TestPrecompiledGraphemes(t *testing.T) {
	for _, c := range []struct{ s, first string }{
		{"ab", "a"}, {"e\u0301x", "e\u0301"}, {"\r\nx", "\r\n"}, {"\n\r", "\n"},
		{"🇺🇸🇫🇷", "🇺🇸"}, {"👨\u200d👩\u200d👧!", "👨\u200d👩\u200d👧"}, {"👍🏽x", "👍🏽"},
		{"\u1100\u1161\u11a8x", "\u1100\u1161\u11a8"}, {"각\u11a8x", "각\u11a8"}, {"각\u1161", "각"}, {"क्षि", "क्"},
	} {
		if got := c.s[:graphemeLen(c.s)]; got != c.first {
			t.Errorf("first grapheme of %+q = %+q, want %+q", c.s, got, c.first)
		}
	}
}

// TestLoadDirectory loads a model directory: tokenizer.json, with the
// special tokens named in tokenizer_config.json beside it.
func TestLoadDirectory(t *testing.T) {
	dir := t.TempDir()
	var j map[string]any
	if err := json.Unmarshal(tinyByteLevelJSON(), &j); err != nil {
		t.Fatal(err)
	}
	j["added_tokens"] = append(j["added_tokens"].([]any),
		map[string]any{"id": 300, "content": "<s>", "special": true},
		map[string]any{"id": 301, "content": "<pad>", "special": true})
	data, _ := json.Marshal(j)
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	config := `{"bos_token": {"content": "<s>"}, "eos_token": "<|endoftext|>", "pad_token": "<pad>"}`
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	tk, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	eot, _ := tk.TokenID("<|endoftext|>")
	if tk.BOS() != 300 || tk.EOS() != eot || tk.PAD() != 301 || tk.VocabSize() != 302 {
		t.Errorf("BOS %d EOS %d PAD %d size %d; want 300 %d 301 302", tk.BOS(), tk.EOS(), tk.PAD(), tk.VocabSize(), eot)
	}
	if _, err := Load(filepath.Join(dir, "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad", "tokenizer.json")
	os.MkdirAll(filepath.Dir(bad), 0o755)
	os.WriteFile(bad, []byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}`), 0o644)
	var fe *FormatError
	if _, err := Load(filepath.Dir(bad)); !errors.As(err, &fe) || fe.File != bad || fe.Part != "model" {
		t.Errorf("bad file: %v", err)
	}
}

// TestConcurrentEncode encodes from several goroutines at once (run it
// with -race): the word caches are shared.
func TestConcurrentEncode(t *testing.T) {
	tk, err := ParseHF("tiny.json", tinyByteLevelJSON(), nil)
	if err != nil {
		t.Fatal(err)
	}
	texts := []string{"the and in", "and the", "in in in the", "日本 the"}
	want := make([][]int, len(texts))
	for i, s := range texts {
		want[i] = tk.Encode(s, true)
	}
	done := make(chan bool)
	for g := 0; g < 4; g++ {
		go func() {
			ok := true
			for k := 0; k < 2000; k++ {
				i := k % len(texts)
				if !slices.Equal(tk.Encode(texts[i], true), want[i]) {
					ok = false
				}
			}
			done <- ok
		}()
	}
	for g := 0; g < 4; g++ {
		if !<-done {
			t.Error("concurrent Encode gave other ids")
		}
	}
}

// TestFitsModelSpecialBeyond: a special token added past the model's
// vocabulary (its last id) gives a warning naming it; an ordinary token
// there is an error.
func TestFitsModelSpecialBeyond(t *testing.T) {
	tk, err := ParseHF("tiny.json", tinyByteLevelJSON(), nil)
	if err != nil {
		t.Fatal(err)
	}
	eot := tk.VocabSize() - 1
	warning, err := tk.FitsModel(eot)
	if err != nil || !strings.Contains(warning, fmt.Sprintf(`special tokens from id %d on ("<|endoftext|>") are past the model's vocabulary of %d`, eot, eot)) {
		t.Errorf("special token past the vocabulary: %q, %v", warning, err)
	}
	if _, err := tk.FitsModel(eot - 1); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("token %d is", eot-1)) {
		t.Errorf("ordinary token past the vocabulary: %v", err)
	}
}
