package train

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/tokenizer"
)

// codePointEncoder encodes text as its code points (EOS -1).
type codePointEncoder struct{}

func (codePointEncoder) Encode(text string, _ bool) []int {
	var ids []int
	for _, r := range text {
		ids = append(ids, int(r))
	}
	return ids
}

func (codePointEncoder) EOS() int { return -1 }

func readLines(t *testing.T, data string, opts DataOptions) (*Dataset, error) {
	t.Helper()
	if opts.Task == "" {
		opts.Task = TaskLM
	}
	if opts.Tokenizer == nil {
		opts.Tokenizer = codePointEncoder{}
	}
	return ReadJSONL(strings.NewReader(data), "rows.jsonl", opts)
}

// A \ud800 or \udc00 escape without its other half stands for no
// character; encoding/json turned it into U+FFFD and the text trained on
// replacement characters, while raw invalid UTF-8 was refused. Now both
// are refused with the line, the field and the escape.
func TestReadJSONLLoneSurrogates(t *testing.T) {
	good := `{"text":"ok"}` + "\n"
	for _, c := range []struct {
		line, want string
	}{
		{`{"text":"bad \ud800 here"}`, `rows.jsonl:2: "text": lone surrogate escape \ud800 at byte 14 of the line`},
		{`{"text":"bad \udc00"}`, `rows.jsonl:2: "text": lone surrogate escape \udc00 at byte 14`},
		{`{"text":"\uDBFF\u0041"}`, `"text": lone surrogate escape \uDBFF at byte 10`},
		{`{"text":"\ud800"}`, `lone surrogate escape \ud800`},
		{`{"text":"\udc00\ud800"}`, `lone surrogate escape \udc00`},
		{`{"prompt":"a","completion":["\ud800"]}`, `"completion": lone surrogate escape \ud800`},
	} {
		_, err := readLines(t, good+c.line+"\n", DataOptions{})
		var le *LineError
		if !errors.As(err, &le) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "half of a UTF-16 pair stands for no character") {
			t.Errorf("%s: %v, want %q", c.line, err, c.want)
		}
	}
	// Fields the run does not read are not looked into.
	if _, err := readLines(t, `{"text":"ab","source":{"x":"\udfff"},"te\ud800xt":1}`+"\n", DataOptions{}); err != nil {
		t.Errorf("a lone surrogate in fields not read: %v", err)
	}
	// A pair is one character; an escaped backslash makes "\ud800" text.
	ds, err := readLines(t, `{"text":"\ud83d\ude00\\ud800 \u00e9"}`+"\n", DataOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []int32{0x1F600, '\\', 'u', 'd', '8', '0', '0', ' ', 'é'}
	if got := ds.Example(0).Tokens; !slices.Equal(got, want) {
		t.Errorf("tokens %v, want %v", got, want)
	}
}

// encoding/json matched field names regardless of case and kept the last
// of two alike: {"Text": …} trained as "text", {"text":"x","text":"y"}
// on "y". Names now match exactly; a name that is a read field's but for
// case, and a read field given twice, are errors (ignoring "Loss_Mask"
// would train on every token); other fields given twice are not read.
func TestReadJSONLFieldNamesExact(t *testing.T) {
	for _, c := range []struct {
		data string
		opts DataOptions
		want string
	}{
		{`{"Text":"ab"}`, DataOptions{}, `rows.jsonl:1: field "Text": field names are case-sensitive, and "Text" is not "text": rename the field (or remove it)`},
		{`{"tokens":[1,2],"Label":1}`, DataOptions{Task: TaskClassify}, `field "Label": field names are case-sensitive, and "Label" is not "label"`},
		{`{"Prompt":"a","completion":"b"}`, DataOptions{}, `field "Prompt": field names are case-sensitive`},
		{`{"tokens":[1,2],"Loss_Mask":[0,1]}`, DataOptions{}, `field "Loss_Mask": field names are case-sensitive, and "Loss_Mask" is not "loss_mask"`},
		{`{"TEXT":"a","text":"bc"}`, DataOptions{}, `field "TEXT": field names are case-sensitive`},
		{`{"text":"x","text":"y"}`, DataOptions{}, `rows.jsonl:1: field "text" is given twice: give each field once`},
		{`{"text":"x","t\u0065xt":"y"}`, DataOptions{}, `field "text" is given twice`},
		{`[1,2]`, DataOptions{}, "want a JSON object, found a JSON array"},
		{`null`, DataOptions{}, "want a JSON object, found JSON null"},
		{`7`, DataOptions{}, "want a JSON object, found a JSON number"},
		{`{"tokens":[1,2]`, DataOptions{}, "not valid JSON: unexpected end of JSON input"},
	} {
		_, err := readLines(t, c.data+"\n", c.opts)
		var le *LineError
		if !errors.As(err, &le) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.data, err, c.want)
		}
	}
	ds, err := readLines(t, `{"tokens":[1,2],"id":1,"id":2,"x":{"text":"n"}}`+"\n", DataOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ds.IgnoredFields(), `"id" (first on line 1), "x" (first on line 1)`; got != want {
		t.Errorf("ignored fields %s, want %s", got, want)
	}
	// Escapes in names and white space anywhere are JSON's.
	ds, err = readLines(t, " { \"t\\u0065xt\" : \"ab\" , \"loss_mask\" : null } \n", DataOptions{})
	if err != nil || !slices.Equal(ds.Example(0).Tokens, []int32{'a', 'b'}) || ds.IgnoredFields() != "" {
		t.Errorf("escaped name: %v", err)
	}
}

// Text the tokenizer cannot encode (a Unigram model without unk_id: the
// Rust library fails with "Encountered an unknown token but `unk_id` is
// missing") is the line's error, not ids with the character left out.
func TestReadJSONLTextTheTokenizerCannotEncode(t *testing.T) {
	tok, err := tokenizer.ParseHF("ug.json", []byte(`{"model":{"type":"Unigram","unk_id":null,"vocab":[["a",-1.0],["b",-1.0],["ab",-0.5]]}}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	opts := DataOptions{Tokenizer: tok}
	ds, err := readLines(t, `{"text":"abab"}`+"\n", opts)
	if err != nil || !slices.Equal(ds.Example(0).Tokens, []int32{2, 2}) {
		t.Fatalf("covered text: %v", err)
	}
	_, err = readLines(t, `{"text":"abab"}`+"\n"+`{"prompt":"ab","completion":"axb"}`+"\n", opts)
	want := `rows.jsonl:2: "completion": ug.json: cannot encode "x" (U+0078) at byte 1 of the word "axb"`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want %q", err, want)
	}
}

// FuzzObjectMembers checks the member split against encoding/json on
// valid JSON objects: the same names (unescaped) and values, the last of
// a name given twice being the one encoding/json keeps.
func FuzzObjectMembers(f *testing.F) {
	for _, s := range []string{`{"tokens":[1,2],"loss_mask":[0,1]}`, ` { "a" : { "b" : [ "}" , "\"" ] } , "c":-1.5e3 ,"d":null}`,
		`{"t\u0065xt":"\ud83d\ude00","x":true}`, `{"a":1,"a":2}`, `{}`, `[1]`, `"s"`, `{"\\":"\\\\"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) || !utf8.Valid(data) { // ReadJSONL refuses invalid UTF-8 first
			return
		}
		members, err := objectMembers(data)
		var want map[string]json.RawMessage
		if json.Unmarshal(data, &want) != nil || want == nil {
			if err == nil {
				t.Fatalf("%q: members %v of no object", data, members)
			}
			return
		}
		if err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		got := map[string]json.RawMessage{}
		for _, m := range members {
			if !bytes.Equal(data[m.at:m.at+len(m.value)], m.value) {
				t.Fatalf("%q: member %q = %q is not the line's bytes at %d", data, m.name, m.value, m.at)
			}
			got[m.name] = m.value // the last of a name, as encoding/json keeps
		}
		if len(got) != len(want) {
			t.Fatalf("%q: %d names, encoding/json finds %d", data, len(got), len(want))
		}
		for name, v := range got {
			if w, ok := want[name]; !ok || !bytes.Equal(w, v) {
				t.Fatalf("%q: member %q = %q, encoding/json %q", data, name, v, w)
			}
		}
	})
}

// A read field given twice among many other fields is found.
func TestReadJSONLManyFields(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"tokens":[1,2]`)
	for i := range 100000 {
		fmt.Fprintf(&b, `,"k%d":%d`, i, i)
	}
	line := b.String() + "}\n"
	ds, err := readLines(t, line, DataOptions{})
	if err != nil || ds.Len() != 1 {
		t.Fatalf("%d distinct fields: %v", 100001, err)
	}
	_, err = readLines(t, line+line[:len(line)-2]+`,"tokens":[3]}`+"\n", DataOptions{})
	if err == nil || !strings.Contains(err.Error(), `rows.jsonl:2: field "tokens" is given twice`) {
		t.Errorf("error %v", err)
	}
}

// TestPromptCompletionEncodedTogether: a text prompt and completion are
// encoded joined, as Hugging Face's prompt-completion training does, the
// prompt's tokens being those it encodes to alone: with llama2.c's
// tokenizer (a SentencePiece word start before each text) the completion
// " time" of "Once upon a" is "▁time", not a lone "▁" and "time" as it
// encodes alone.
func TestPromptCompletionEncodedTogether(t *testing.T) {
	tok, err := tokenizer.Load(sharedtest.Path(t, "models", "stories260K", "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	ds, err := readLines(t, `{"prompt":"Once upon a","completion":" time"}`+"\n", DataOptions{Tokenizer: tok, JoinText: true})
	if err != nil {
		t.Fatal(err)
	}
	whole, prompt := tok.Encode("Once upon a time", true), tok.Encode("Once upon a", true)
	if apart := append(slices.Clone(prompt), tok.Encode(" time", false)...); slices.Equal(apart, whole) {
		t.Fatalf("the tokenizer encodes the completion alone as joined (%v): the test shows nothing", apart)
	}
	ex := ds.Example(0)
	want := append(slices.Clone(whole), tok.EOS())
	if got := int32sToInts(ex.Tokens); !slices.Equal(got, want) || ex.PromptLen != len(prompt) {
		t.Errorf("tokens %v (prompt %d), want %v (prompt %d)", got, ex.PromptLen, want, len(prompt))
	}
	for i, m := range ex.LossMask {
		if m != (i >= len(prompt)) {
			t.Errorf("loss mask %v: want the completion's %d tokens and EOS alone", ex.LossMask, len(want)-len(prompt))
			break
		}
	}
}

// TestTemplateSuffix: what a tokenizer's template puts after a text
// (BERT's [SEP], Llama's EOS with add_eos_token) ends a prompt and
// completion together rather than splitting them, and stays when a text
// is truncated to --max-len (as Hugging Face truncates inside the text).
func TestTemplateSuffix(t *testing.T) {
	tok, err := tokenizer.ParseHF("bert.json", []byte(`{
		"model":{"type":"WordLevel","vocab":{"[UNK]":0,"[CLS]":1,"[SEP]":2,"the":3,"cat":4,"sat":5,"on":6,"mat":7},"unk_token":"[UNK]"},
		"pre_tokenizer":{"type":"Whitespace"},
		"added_tokens":[{"id":1,"content":"[CLS]","special":true},{"id":2,"content":"[SEP]","special":true}],
		"post_processor":{"type":"TemplateProcessing",
			"single":[{"SpecialToken":{"id":"[CLS]","type_id":0}},{"Sequence":{"id":"A","type_id":0}},{"SpecialToken":{"id":"[SEP]","type_id":0}}],
			"pair":[],
			"special_tokens":{"[CLS]":{"id":"[CLS]","ids":[1],"tokens":["[CLS]"]},"[SEP]":{"id":"[SEP]","ids":[2],"tokens":["[SEP]"]}}}}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := readLines(t, `{"prompt":"the cat","completion":" sat on the mat"}`+"\n", DataOptions{Tokenizer: tok, JoinText: true})
	if err != nil {
		t.Fatal(err)
	}
	if ex := ds.Example(0); !slices.Equal(int32sToInts(ex.Tokens), []int{1, 3, 4, 5, 6, 3, 7, 2}) || ex.PromptLen != 3 {
		t.Errorf("prompt and completion: tokens %v (prompt %d), want [CLS] the cat sat on the mat [SEP] (prompt 3)", ex.Tokens, ex.PromptLen)
	}
	ds, err = readLines(t, `{"text":"the cat sat on the mat","label":1}`+"\n", DataOptions{Task: TaskClassify, Tokenizer: tok, JoinText: true, MaxLen: 5})
	if err != nil {
		t.Fatal(err)
	}
	if ex := ds.Example(0); !slices.Equal(int32sToInts(ex.Tokens), []int{1, 3, 4, 5, 2}) {
		t.Errorf("text cut to 5: %v, want [CLS] the cat sat [SEP]", ex.Tokens)
	}
}

// TestTextEncodingOfEarlierRuns: without JoinText — a run started by an
// earlier version, resumed — text is encoded as it was then (prompt and
// completion apart, texts cut as token ids), so that the run goes on
// training on the tokens it started with.
func TestTextEncodingOfEarlierRuns(t *testing.T) {
	tok, err := tokenizer.Load(sharedtest.Path(t, "models", "stories260K", "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	ds, err := readLines(t, `{"prompt":"Once upon a","completion":" time"}`+"\n", DataOptions{Tokenizer: tok, MaxLen: 3})
	if err != nil {
		t.Fatal(err)
	}
	prompt := tok.Encode("Once upon a", true)
	want := append(append(slices.Clone(prompt), tok.Encode(" time", false)...), tok.EOS())
	if ex := ds.Example(0); !slices.Equal(int32sToInts(ex.Tokens), want) || ex.PromptLen != len(prompt) {
		t.Errorf("tokens %v (prompt %d), want %v (prompt %d)", ex.Tokens, ex.PromptLen, want, len(prompt))
	}
}

// TestPromptCompletionSeam: where a byte-level BPE merges the prompt's end
// with the completion's start, the prompt keeps the tokens it has alone
// (as given at inference), the completion follows encoded alone, and the
// template's suffix still ends the whole.
func TestPromptCompletionSeam(t *testing.T) {
	tok, err := tokenizer.ParseHF("bpe.json", []byte(`{
		"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2,"</s>":3},"merges":["a b"]},
		"added_tokens":[{"id":3,"content":"</s>","special":true}],
		"post_processor":{"type":"TemplateProcessing",
			"single":[{"Sequence":{"id":"A","type_id":0}},{"SpecialToken":{"id":"</s>","type_id":0}}],
			"pair":[],
			"special_tokens":{"</s>":{"id":"</s>","ids":[3],"tokens":["</s>"]}}}}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := readLines(t, `{"prompt":"ba","completion":"b"}`+"\n", DataOptions{Tokenizer: tok, JoinText: true})
	if err != nil {
		t.Fatal(err)
	}
	// Joined, "bab" is b ab; the prompt alone is b a.
	if ex := ds.Example(0); !slices.Equal(int32sToInts(ex.Tokens), []int{1, 0, 1, 3}) || ex.PromptLen != 2 {
		t.Errorf("tokens %v (prompt %d), want b a | b </s> (prompt 2)", ex.Tokens, ex.PromptLen)
	}
}

func int32sToInts(v []int32) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}

// A "text" that encodes to no token is named as the text it was, not as
// "tokens" the line does not have; one that encodes to one token is an
// example with nothing to predict (counted and reported by the run, as
// an all-0 loss_mask is), not an error.
func TestShortTextNamed(t *testing.T) {
	if _, err := readLines(t, `{"text":""}`+"\n", DataOptions{}); err == nil || !strings.Contains(err.Error(), `rows.jsonl:1: "text" encodes to no token`) {
		t.Errorf(`{"text":""}: %v, want "text" encodes to no token`, err)
	}
	ds, err := readLines(t, `{"text":"a"}`+"\n"+`{"tokens":[7]}`+"\n", DataOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Len() != 2 || len(ds.Example(0).Tokens) != 1 || len(ds.Example(1).Tokens) != 1 {
		t.Errorf("one-token examples: %d examples", ds.Len())
	}
}
