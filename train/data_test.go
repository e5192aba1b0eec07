package train

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func readString(t *testing.T, text string, opts DataOptions) (*Dataset, error) {
	t.Helper()
	return ReadJSONL(strings.NewReader(text), "data.jsonl", opts)
}

func TestReadLM(t *testing.T) {
	text := "{\"tokens\":[5, 6 ,7],\"source\":\"ignored\"}\r\n" +
		"\n" +
		"   \n" +
		`{"loss_mask":[0,1,true,false],"tokens":[1,2,3,4]}` + "\n" +
		`{"tokens":[ 9 , 8 ]}` // no final newline
	ds, err := readString(t, text, DataOptions{Task: TaskLM, VocabSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Len() != 3 {
		t.Fatalf("%d examples, want 3", ds.Len())
	}
	want := []Example{
		{Tokens: []int32{5, 6, 7}, LossMask: []bool{true, true, true}, Line: 1},
		{Tokens: []int32{1, 2, 3, 4}, LossMask: []bool{false, true, true, false}, Line: 4},
		{Tokens: []int32{9, 8}, LossMask: []bool{true, true}, Line: 5},
	}
	for i, w := range want {
		if got := ds.Example(i); !reflect.DeepEqual(got, w) {
			t.Errorf("example %d = %+v, want %+v", i, got, w)
		}
	}
	// Without any loss_mask no mask is stored.
	ds, err = readString(t, `{"tokens":[1,2]}`, DataOptions{Task: TaskLM})
	if err != nil || ds.Example(0).LossMask != nil {
		t.Errorf("no masks: %+v, %v", ds.Example(0), err)
	}
}

func TestReadClassify(t *testing.T) {
	ds, err := readString(t, `{"tokens":[3],"label":1}`+"\n"+`{"label":0,"tokens":[4,5,6]}`, DataOptions{Task: TaskClassify, NumClasses: 2})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Len() != 2 || ds.Example(0).Label != 1 || ds.Example(1).Label != 0 || !slices.Equal(ds.Example(1).Tokens, []int32{4, 5, 6}) {
		t.Errorf("got %+v %+v", ds.Example(0), ds.Example(1))
	}
}

func TestReadErrors(t *testing.T) {
	good := `{"tokens":[1,2,3]}` + "\n"
	lm := DataOptions{Task: TaskLM, VocabSize: 100}
	cls := DataOptions{Task: TaskClassify, VocabSize: 100, NumClasses: 3}
	cases := []struct {
		name string
		opts DataOptions
		text string
		line int
		msg  string
	}{
		{"not json", lm, good + good + `{"tokens":[1,2}`, 3, "not valid JSON"},
		{"not object", lm, `[1,2,3]`, 1, "want a JSON object, found a JSON array"},
		{"string line", lm, good + `"hello"`, 2, "want a JSON object, found a JSON string"},
		{"missing tokens", lm, good + `{"tokenz":[1,2]}`, 2, `no "tokens"`},
		{"null tokens", lm, `{"tokens":null}`, 1, `no "tokens"`},
		{"tokens not array", lm, `{"tokens":"1 2 3"}`, 1, "not an array"},
		{"fraction", lm, good + good + good + `{"tokens":[1,2.5,3]}`, 4, "tokens element 1 is 2.5, not an integer"},
		{"exponent", lm, `{"tokens":[1,2e1]}`, 1, "tokens element 1 is 2e1, want an integer written without a fraction or exponent"},
		{"string token", lm, `{"tokens":[1,"2"]}`, 1, "tokens element 1 is not an integer"},
		{"bool token", lm, `{"tokens":[1,true]}`, 1, "tokens element 1 is true, not an integer"},
		{"null token", lm, `{"tokens":[1,null]}`, 1, "tokens element 1 is null"},
		{"nested token", lm, `{"tokens":[1,[2]]}`, 1, "tokens element 1 is not an integer"},
		{"negative token", lm, `{"tokens":[1,-2]}`, 1, "tokens element 1 is -2, outside the vocabulary [0, 100)"},
		{"token past vocab", lm, good + `{"tokens":[1,100]}`, 2, "tokens element 1 is 100, outside the vocabulary [0, 100)"},
		{"token past int32", DataOptions{Task: TaskLM}, `{"tokens":[1,2147483648]}`, 1, "outside [0, 2^31)"},
		{"token past int64", DataOptions{Task: TaskLM}, `{"tokens":[1,99999999999999999999]}`, 1, "out of range"},
		{"empty tokens", lm, `{"tokens":[]}`, 1, `"tokens" is empty`},
		{"mask length", lm, good + `{"tokens":[1,2,3],"loss_mask":[1,1]}`, 2, `"loss_mask" has 2 entries for 3 tokens`},
		{"mask value", lm, `{"tokens":[1,2,3],"loss_mask":[1,2,0]}`, 1, "loss_mask element 1 is 2, want 0 or 1"},
		{"mask not array", lm, `{"tokens":[1,2,3],"loss_mask":1}`, 1, `"loss_mask" is not an array`},
		{"label in lm", lm, `{"tokens":[1,2,3],"label":1}`, 1, "task is lm"},
		{"missing label", cls, `{"tokens":[1],"label":0}` + "\n" + `{"tokens":[1]}`, 2, `no "label"`},
		{"label fraction", cls, `{"tokens":[1],"label":0.5}`, 1, `"label" is 0.5, not an integer`},
		{"label string", cls, `{"tokens":[1],"label":"a"}`, 1, `"label" is "a", not an integer`},
		{"label range", cls, `{"tokens":[1],"label":3}`, 1, "outside the model's 3 classes"},
		{"negative label", cls, `{"tokens":[1],"label":-1}`, 1, "outside the model's 3 classes"},
		{"mask in classify", cls, `{"tokens":[1],"label":0,"loss_mask":[1]}`, 1, "task is classify"},
		{"empty file", lm, "", 0, "no examples"},
		{"blank file", lm, "\n  \n\r\n", 0, "no examples"},
		{"long line", DataOptions{Task: TaskLM, MaxLineBytes: 64}, good + good + `{"tokens":[` + strings.Repeat("1,", 40) + "1]}\n" + good, 3, "longer than 64 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := readString(t, c.text, c.opts)
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("err = %v, want a *LineError", err)
			}
			if le.File != "data.jsonl" || le.Line != c.line || !strings.Contains(le.Msg, c.msg) {
				t.Errorf("err = %q, want data.jsonl line %d with %q", err, c.line, c.msg)
			}
			if c.line > 0 && !strings.HasPrefix(err.Error(), fmt.Sprintf("data.jsonl:%d: ", c.line)) {
				t.Errorf("message %q does not start with file:line", err)
			}
		})
	}
	if _, err := readString(t, good, DataOptions{Task: "regress"}); err == nil {
		t.Error("unknown task: no error")
	}
	if _, err := LoadJSONL(filepath.Join(t.TempDir(), "missing.jsonl"), lm); err == nil || !strings.Contains(err.Error(), "missing.jsonl") {
		t.Errorf("missing file: %v", err)
	}
}

func TestLoadJSONLFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "train.jsonl")
	os.WriteFile(path, []byte(`{"tokens":[1,2]}`+"\n"+`{"tokens":[]}`+"\n"), 0o644)
	_, err := LoadJSONL(path, DataOptions{Task: TaskLM})
	if err == nil || !strings.HasPrefix(err.Error(), path+":2: ") {
		t.Errorf("err = %v, want it to start with %s:2:", err, path)
	}
}

func mustRead(t *testing.T, text string, opts DataOptions) *Dataset {
	t.Helper()
	ds, err := readString(t, text, opts)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func TestLMBatchLayout(t *testing.T) {
	ds := mustRead(t, `{"tokens":[5,6,7]}
{"tokens":[1,2,3,4,9],"loss_mask":[0,0,1,1,0]}
{"tokens":[8,9]}`, DataOptions{Task: TaskLM})
	eb, err := NewEvalBatches(ds, BatchOptions{BatchSize: 2, PadID: 0})
	if err != nil {
		t.Fatal(err)
	}
	const I = IgnoreIndex
	var b Batch
	if !eb.Next(&b) {
		t.Fatal("no first batch")
	}
	want := Batch{
		B: 2, T: 5, Rows: 2, Examples: []int{0, 1}, NumTargets: 4,
		Tokens:        []int64{5, 6, 7, 0, 0, 1, 2, 3, 4, 9},
		AttentionMask: []int64{1, 1, 1, 0, 0, 1, 1, 1, 1, 1},
		Targets:       []int64{6, 7, I, I, I, I, 3, 4, I, I},
	}
	if !reflect.DeepEqual(b, want) {
		t.Errorf("batch 1\n got %+v\nwant %+v", b, want)
	}
	if !eb.Next(&b) {
		t.Fatal("no second batch")
	}
	want = Batch{
		B: 2, T: 2, Rows: 1, Examples: []int{2}, NumTargets: 1,
		Tokens:        []int64{8, 9, 0, 0},
		AttentionMask: []int64{1, 1, 0, 0},
		Targets:       []int64{9, I, I, I},
	}
	if !reflect.DeepEqual(b, want) {
		t.Errorf("batch 2 (one filler row)\n got %+v\nwant %+v", b, want)
	}
	if eb.Next(&b) {
		t.Error("a third batch")
	}

	// Truncation to 3 tokens and a fixed length of 3, pad id 99.
	eb, _ = NewEvalBatches(ds, BatchOptions{BatchSize: 3, MaxLen: 3, FixedLen: true, PadID: 99})
	eb.Next(&b)
	want = Batch{
		B: 3, T: 3, Rows: 3, Examples: []int{0, 1, 2}, NumTargets: 4,
		Tokens:        []int64{5, 6, 7, 1, 2, 3, 8, 9, 99},
		AttentionMask: []int64{1, 1, 1, 1, 1, 1, 1, 1, 0},
		Targets:       []int64{6, 7, I, I, 3, I, 9, I, I},
	}
	if !reflect.DeepEqual(b, want) {
		t.Errorf("truncated batch\n got %+v\nwant %+v", b, want)
	}
}

func TestClassifyBatchLayout(t *testing.T) {
	ds := mustRead(t, `{"tokens":[5,6,7],"label":2}
{"tokens":[4],"label":0}`, DataOptions{Task: TaskClassify})
	eb, _ := NewEvalBatches(ds, BatchOptions{BatchSize: 3, PadID: 1})
	var b Batch
	eb.Next(&b)
	want := Batch{
		B: 3, T: 3, Rows: 2, Examples: []int{0, 1}, NumTargets: 2,
		Tokens:        []int64{5, 6, 7, 4, 1, 1, 1, 1, 1},
		AttentionMask: []int64{1, 1, 1, 1, 0, 0, 0, 0, 0},
		Labels:        []int64{2, 0, IgnoreIndex},
	}
	if !reflect.DeepEqual(b, want) {
		t.Errorf("got %+v\nwant %+v", b, want)
	}
}

func TestBatchOptionErrors(t *testing.T) {
	ds := mustRead(t, `{"tokens":[1,2]}`, DataOptions{Task: TaskLM})
	for _, o := range []BatchOptions{{BatchSize: 0}, {BatchSize: 2, MaxLen: -1}, {BatchSize: 2, FixedLen: true}, {BatchSize: 2, MaxLen: 1}} {
		if _, err := NewEvalBatches(ds, o); err == nil {
			t.Errorf("%+v: no error", o)
		}
		if _, err := NewTrainBatches(ds, o, 1, Position{}); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	if _, err := NewTrainBatches(ds, BatchOptions{BatchSize: 1}, 1, Position{Index: 1}); err == nil {
		t.Error("resume past the data: no error")
	}
}

// numbered builds an lm dataset whose example i has tokens [i, i+1], so a
// batch's first token column names its examples.
func numbered(t *testing.T, n int) *Dataset {
	var sb strings.Builder
	for i := range n {
		fmt.Fprintf(&sb, "{\"tokens\":[%d,%d]}\n", i, i+1)
	}
	return mustRead(t, sb.String(), DataOptions{Task: TaskLM})
}

func TestShuffleCoverageAndDeterminism(t *testing.T) {
	const n, B = 23, 4 // n not a multiple of B: batches straddle epochs
	ds := numbered(t, n)
	stream := func(seed uint64, batches int) []int {
		tb, err := NewTrainBatches(ds, BatchOptions{BatchSize: B}, seed, Position{})
		if err != nil {
			t.Fatal(err)
		}
		var out []int
		var b Batch
		for range batches {
			tb.Next(&b)
			if b.Rows != B || len(b.Examples) != B {
				t.Fatalf("train batch with %d rows", b.Rows)
			}
			for r := range B {
				if b.Tokens[r*b.T] != int64(b.Examples[r]) {
					t.Fatalf("row %d holds example %d's tokens, Examples says %d", r, b.Tokens[r*b.T], b.Examples[r])
				}
			}
			out = append(out, b.Examples...)
		}
		return out
	}
	a := stream(42, 40) // 160 examples: 6 full epochs and part of a 7th
	for e := range 6 {
		epoch := slices.Clone(a[e*n : (e+1)*n])
		if !slices.Equal(epoch, EpochOrder(42, int64(e), n)) {
			t.Errorf("epoch %d visits %v, want EpochOrder %v", e, epoch, EpochOrder(42, int64(e), n))
		}
		slices.Sort(epoch)
		for i, x := range epoch {
			if x != i {
				t.Fatalf("epoch %d does not visit every example exactly once: %v", e, epoch)
			}
		}
	}
	if slices.Equal(a[:n], a[n:2*n]) {
		t.Error("epochs 0 and 1 have the same order")
	}
	if !slices.Equal(a, stream(42, 40)) {
		t.Error("same seed, different stream")
	}
	if slices.Equal(a, stream(43, 40)) {
		t.Error("seeds 42 and 43 give the same stream")
	}
}

func TestResumeIsIdentical(t *testing.T) {
	ds := numbered(t, 17)
	opts := BatchOptions{BatchSize: 5, MaxLen: 8}
	ref, _ := NewTrainBatches(ds, opts, 7, Position{})
	var want []Batch
	var positions []Position
	for range 20 {
		positions = append(positions, ref.Position())
		var b Batch
		ref.Next(&b)
		want = append(want, b)
	}
	for k := range want {
		tb, err := NewTrainBatches(ds, opts, 7, positions[k])
		if err != nil {
			t.Fatal(err)
		}
		var b Batch // reused across calls, as the training loop will
		for j := k; j < len(want); j++ {
			tb.Next(&b)
			if !reflect.DeepEqual(b, want[j]) {
				t.Fatalf("resumed at batch %d (%+v): batch %d differs", k, positions[k], j)
			}
		}
	}
}

// referenceOrder is EpochOrder written out from its documentation, with
// the generator and the bounded draw as separate plain steps.
func referenceOrder(seed uint64, epoch int64, n int) []int {
	state := seed ^ uint64(epoch+1)*0x9E3779B97F4A7C15
	next := func() uint64 {
		state += 0x9E3779B97F4A7C15
		z := state
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
		z = (z ^ (z >> 27)) * 0x94D049BB133111EB
		return z ^ (z >> 31)
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	for i := n - 1; i > 0; i-- {
		bound := uint64(i + 1)
		// Accept a draw unless its low product falls in the (2⁶⁴ mod
		// bound) values that would make some results more likely.
		reject := (1<<64 - 1 - bound + 1) % bound
		var j uint64
		for {
			hi, lo := bits.Mul64(next(), bound)
			if lo >= reject {
				j = hi
				break
			}
		}
		order[i], order[j] = order[j], order[i]
	}
	return order
}

func TestEpochOrderMatchesDocumentation(t *testing.T) {
	for _, n := range []int{0, 1, 2, 10, 1000} {
		for _, seed := range []uint64{0, 1, 1 << 63} {
			for _, epoch := range []int64{0, 1, 99} {
				if got, want := EpochOrder(seed, epoch, n), referenceOrder(seed, epoch, n); !slices.Equal(got, want) {
					t.Fatalf("EpochOrder(%d, %d, %d) = %v, want %v", seed, epoch, n, got, want)
				}
			}
		}
	}
	// The first values of SplitMix64 from state 0 are published test
	// vectors of the generator.
	g := splitMix64{}
	for i, want := range []uint64{0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f} {
		if got := g.next(); got != want {
			t.Errorf("SplitMix64 output %d = %#x, want %#x", i, got, want)
		}
	}
}

// TestEpochOrderUniform checks that the 24 orders of 4 examples come up
// about equally often across seeds (a χ² test with 23 degrees of freedom,
// 0.1% critical value 49.7).
func TestEpochOrderUniform(t *testing.T) {
	counts := map[[4]int]int{}
	const trials = 48000
	for s := range trials {
		o := EpochOrder(uint64(s), 0, 4)
		counts[[4]int(o)]++
	}
	if len(counts) != 24 {
		t.Fatalf("%d distinct orders of 4, want 24", len(counts))
	}
	expected := float64(trials) / 24
	var chi2 float64
	for _, c := range counts {
		d := float64(c) - expected
		chi2 += d * d / expected
	}
	if chi2 > 49.7 {
		t.Errorf("χ² = %.1f over 24 orders, want < 49.7", chi2)
	}
}

func FuzzReadJSONL(f *testing.F) {
	f.Add([]byte(`{"tokens":[1,2,3],"loss_mask":[0,1,1]}`+"\n"+`{"tokens":[4,5]}`), false)
	f.Add([]byte(`{"tokens":[1],"label":2}`), true)
	f.Fuzz(func(t *testing.T, data []byte, classify bool) {
		opts := DataOptions{Task: TaskLM, VocabSize: 50, MaxLineBytes: 1 << 12}
		if classify {
			opts = DataOptions{Task: TaskClassify, VocabSize: 50, NumClasses: 4, MaxLineBytes: 1 << 12}
		}
		ds, err := ReadJSONL(strings.NewReader(string(data)), "fuzz.jsonl", opts)
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("error %v is not a *LineError", err)
			}
			return
		}
		for i := range ds.Len() {
			ex := ds.Example(i)
			if len(ex.Tokens) == 0 || (ex.LossMask != nil && len(ex.LossMask) != len(ex.Tokens)) {
				t.Fatalf("example %d: %+v", i, ex)
			}
			for _, tok := range ex.Tokens {
				if tok < 0 || tok >= 50 {
					t.Fatalf("example %d: token %d outside the vocabulary", i, tok)
				}
			}
			if classify && (ex.Label < 0 || ex.Label >= 4) {
				t.Fatalf("example %d: label %d", i, ex.Label)
			}
		}
		eb, err := NewEvalBatches(ds, BatchOptions{BatchSize: 3, MaxLen: 5})
		if err != nil {
			t.Fatal(err)
		}
		var b Batch
		rows := 0
		for eb.Next(&b) {
			rows += b.Rows
		}
		if rows != ds.Len() {
			t.Fatalf("batches hold %d rows, the data %d examples", rows, ds.Len())
		}
	})
}

// byteTokenizer encodes text as its bytes + 3 (ids 0–2 reserved: BOS 1,
// EOS 2), as a stand-in for a tokenizer file.
type byteTokenizer struct{}

func (byteTokenizer) Encode(text string, addSpecial bool) []int {
	var ids []int
	if addSpecial {
		ids = append(ids, 1)
	}
	for _, b := range []byte(text) {
		ids = append(ids, int(b)+3)
	}
	return ids
}

func (byteTokenizer) EOS() int { return 2 }

// TestTextAndPromptCompletionRows: "text" rows are encoded with the
// tokenizer's template; "prompt"/"completion" rows, as ids or text, are
// the prompt followed by the completion (text completions end with the
// end token) with the loss on the completion only.
func TestTextAndPromptCompletionRows(t *testing.T) {
	data := `{"text":"ab"}
{"prompt":[5,6],"completion":[7]}
{"prompt":"a","completion":"bc"}
{"tokens":[4,5,6]}
`
	ds, err := ReadJSONL(strings.NewReader(data), "rows.jsonl", DataOptions{Task: TaskLM, VocabSize: 300, Tokenizer: byteTokenizer{}})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		tokens    []int32
		mask      []bool
		promptLen int
	}{
		{[]int32{1, 'a' + 3, 'b' + 3}, []bool{true, true, true}, 0},
		{[]int32{5, 6, 7}, []bool{false, false, true}, 2},
		{[]int32{1, 'a' + 3, 'b' + 3, 'c' + 3, 2}, []bool{false, false, true, true, true}, 2},
		{[]int32{4, 5, 6}, []bool{true, true, true}, 0},
	}
	if ds.Len() != len(want) {
		t.Fatalf("%d examples, want %d", ds.Len(), len(want))
	}
	for i, w := range want {
		e := ds.Example(i)
		if !slices.Equal(e.Tokens, w.tokens) || !slices.Equal(e.LossMask, w.mask) || e.PromptLen != w.promptLen {
			t.Errorf("example %d: tokens %v mask %v prompt %d, want %v %v %d", i, e.Tokens, e.LossMask, e.PromptLen, w.tokens, w.mask, w.promptLen)
		}
	}
	for _, c := range []struct{ line, want string }{
		{`{"text":"ab","tokens":[1,2]}`, `give one of "tokens", "text", "prompt" with "completion", or "messages"`},
		{`{"prompt":[1,2]}`, `"prompt" and "completion" go together`},
		{`{"prompt":[],"completion":[3]}`, `"prompt" is empty`},
		{`{"prompt":[1],"completion":[3],"loss_mask":[0,1]}`, `"loss_mask" given with "prompt" and "completion"`},
		{`{"prompt":{"a":1},"completion":[3]}`, `"prompt": want a string or an array of token ids`},
		{`{"label":1}`, `no "tokens" field`},
	} {
		_, err := ReadJSONL(strings.NewReader(c.line+"\n"), "bad.jsonl", DataOptions{Task: TaskLM, Tokenizer: byteTokenizer{}})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "bad.jsonl:1: ") {
			t.Errorf("%s: got %v, want bad.jsonl:1: …%s", c.line, err, c.want)
		}
	}
	_, err = ReadJSONL(strings.NewReader(`{"text":"ab"}`+"\n"), "t.jsonl", DataOptions{Task: TaskLM})
	if err == nil || !strings.Contains(err.Error(), `"text" is text: give --tokenizer`) {
		t.Errorf("text without a tokenizer: %v", err)
	}
	cls, err := ReadJSONL(strings.NewReader(`{"text":"x","label":1}`+"\n"), "c.jsonl", DataOptions{Task: TaskClassify, Tokenizer: byteTokenizer{}})
	if err != nil || !slices.Equal(cls.Example(0).Tokens, []int32{1, 'x' + 3}) {
		t.Errorf("classify text row: %v", err)
	}
}
