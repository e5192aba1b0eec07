package serve

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/dstune/dstune/generate"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/tokenizer"
	"github.com/dstune/dstune/tokenizer/chat"
)

// chatML is ChatML: its generation prompt ends in a newline, which
// llama2.c's tokenizer encodes as the byte token <0x0A>.
const chatML = `{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}`

// storiesServer serves stories260K with its byte-fallback tokenizer
// (tok512: a newline and every character outside its 512 tokens are byte
// tokens) and ChatML.
func storiesServer(t *testing.T) (string, *tokenizer.Tokenizer) {
	t.Helper()
	m, err := onnx.ReadFile(sharedtest.Path(t, "models", "stories260K", "stories260K.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	model, err := ir.NewModelShared(m)
	if err != nil {
		t.Fatal(err)
	}
	base, err := NewBase(m, model)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := generate.New(model, generate.Options{Threads: 1, Context: 128})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dec.Close)
	tok, err := tokenizer.Load(sharedtest.Path(t, "models", "stories260K", "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	ct, err := chat.FromSource("chatml.jinja", chatML, nil)
	if err != nil {
		t.Fatal(err)
	}
	encode := func(text string) ([]int, error) { return tok.EncodeChecked(text, false) }
	srv := New(Config{Base: base, Decoder: dec, Tokenizer: storiesTokenizer{tok}, DeltaDir: t.TempDir(),
		Chat: &Chat{Template: ct, Encode: encode}})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return hs.URL, tok
}

func storiesComplete(t *testing.T, url, body string) fullChoice {
	t.Helper()
	code, b := postJSON(t, url+"/v1/completions", body)
	var c fullCompletion
	if err := json.Unmarshal(b, &c); err != nil || code != 200 || len(c.Choices) != 1 {
		t.Fatalf("%s: status %d, %v: %s", body, code, err, b)
	}
	return c.Choices[0]
}

// generatedText is the text ids add after prompt: the decoding of both
// past the prompt's own, which it must begin with.
func generatedText(t *testing.T, tok *tokenizer.Tokenizer, prompt, ids []int) string {
	t.Helper()
	p := tok.Decode(prompt, true)
	full := tok.Decode(append(append([]int(nil), prompt...), ids...), true)
	rest, ok := strings.CutPrefix(full, p)
	if !ok {
		t.Fatalf("%q does not begin with the prompt's %q", full, p)
	}
	return rest
}

func int64s(ids []int64) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out
}

// TestPromptEndingInByteTokens: a prompt ending in byte tokens that make
// whole characters ("日本", a chat template's "\n") keeps them: the
// completion's text is its tokens' text alone, its text offsets count
// from the prompt's end, echo gives the prompt whole, and a stop string
// the prompt ends in does not end the reply before it begins. A prompt
// ending inside a character leaves it to the token that completes it.
func TestPromptEndingInByteTokens(t *testing.T) {
	url, tok := storiesServer(t)
	const prompt = "Tom said 日本"
	promptIDs, err := tok.EncodeChecked(prompt, true)
	if err != nil {
		t.Fatal(err)
	}
	if !tok.IsByteToken(promptIDs[len(promptIDs)-1]) {
		t.Fatalf("%q ends in token %q, want a byte token", prompt, tok.Token(promptIDs[len(promptIDs)-1]))
	}

	c := storiesComplete(t, url, `{"model":"base","prompt":"`+prompt+`","max_tokens":3,"temperature":0,"logprobs":0}`)
	want := generatedText(t, tok, promptIDs, int64s(c.Tokens))
	if c.Text != want || want == "" {
		t.Errorf("text %q, want its tokens' %q", c.Text, want)
	}
	if got := strings.Join(c.Logprobs.Tokens, ""); got != c.Text {
		t.Errorf("the tokens' names add up to %q, the text is %q", got, c.Text)
	}
	offset := utf8.RuneCountInString(prompt)
	for i, name := range c.Logprobs.Tokens {
		if c.Logprobs.TextOffset[i] != offset {
			t.Errorf("token %d (%q): text offset %d, want %d", i, name, c.Logprobs.TextOffset[i], offset)
		}
		offset += utf8.RuneCountInString(name)
	}

	echo := storiesComplete(t, url, `{"model":"base","prompt":"`+prompt+`","max_tokens":0,"echo":true}`)
	if echo.Text != prompt {
		t.Errorf("echo, max_tokens 0: text %q, want %q", echo.Text, prompt)
	}
	echo = storiesComplete(t, url, `{"model":"base","prompt":"`+prompt+`","max_tokens":3,"temperature":0,"echo":true}`)
	if echo.Text != prompt+want {
		t.Errorf("echo: text %q, want %q", echo.Text, prompt+want)
	}

	// A stop string the prompt ends in: the reply ends at the first one
	// it generates.
	const qa = "Q: Who is Tom?\nA:\n"
	full := storiesComplete(t, url, `{"model":"base","prompt":"Q: Who is Tom?\nA:\n","max_tokens":12,"temperature":0}`)
	cut, _, _ := strings.Cut(full.Text, "\n")
	if cut == "" {
		t.Fatalf("%q: the reply %q has nothing before its first newline", qa, full.Text)
	}
	stopped := storiesComplete(t, url, `{"model":"base","prompt":"Q: Who is Tom?\nA:\n","max_tokens":12,"temperature":0,"stop":["\n"]}`)
	if stopped.Text != cut {
		t.Errorf("stop \"\\n\" after a prompt ending in one: text %q, want %q", stopped.Text, cut)
	}

	// A prompt ending inside "日" (<0xE6><0x97>): the token completing it
	// gives the whole character.
	ids, _ := tok.EncodeChecked("Tom said 日", true)
	last := ids[len(ids)-1]
	if tok.Token(last) != "<0xA5>" {
		t.Fatalf("\"日\" ends in %q, want <0xA5>", tok.Token(last))
	}
	cutIDs, _ := json.Marshal(ids[:len(ids)-1])
	body := fmt.Sprintf(`{"model":"base","prompt":%s,"max_tokens":1,"logit_bias":{"%d":100},"logprobs":0,"echo":%%v}`, cutIDs, last)
	c = storiesComplete(t, url, fmt.Sprintf(body, false))
	if c.Text != "日" || c.Logprobs.TextOffset[0] != utf8.RuneCountInString("Tom said ") {
		t.Errorf("a prompt ending inside a character: text %q, offset %v; want \"日\" at %d", c.Text, c.Logprobs.TextOffset, utf8.RuneCountInString("Tom said "))
	}
	if c = storiesComplete(t, url, fmt.Sprintf(body, true)); c.Text != "Tom said 日" {
		t.Errorf("a prompt ending inside a character, echo: text %q, want %q", c.Text, "Tom said 日")
	}

	// Chat: the generation prompt's "\n" is not the reply's.
	r := chatComplete(t, url, `{"model":"base","messages":[{"role":"user","content":"Hi"}],"max_tokens":6,"temperature":0,"logprobs":true}`)
	joined := ""
	for _, e := range r.Choices[0].Logprobs.Content {
		joined += e.Token
	}
	if content := r.Choices[0].Message.Content; content != joined || content == "" {
		t.Errorf("chat: content %q, its tokens' text %q", content, joined)
	}
	r = chatComplete(t, url, `{"model":"base","messages":[{"role":"user","content":"Hi"}],"max_tokens":6,"temperature":0,"stop":["\n"]}`)
	want, _, _ = strings.Cut(joined, "\n")
	if r.Choices[0].Message.Content != want || want == "" {
		t.Errorf("chat, stop \"\\n\": content %q, want %q", r.Choices[0].Message.Content, want)
	}
}

// TestPromptLogprobsShared: the choices of one prompt (n, best_of) share
// its logprobs, the ones a single choice gets, and a request scoring its
// prompt alone (max_tokens 0) draws no token: it is not counted in the
// time to the first token, though it is a completed request.
func TestPromptLogprobsShared(t *testing.T) {
	f := newFixture(t, 0)
	one := f.complete(t, `{"model":"base","prompt":[1,5,9,2,7],"max_tokens":2,"echo":true,"logprobs":2,"seed":4}`)
	for _, body := range []string{
		`{"model":"base","prompt":[1,5,9,2,7],"max_tokens":2,"echo":true,"logprobs":2,"n":3,"seed":4}`,
		`{"model":"base","prompt":[1,5,9,2,7],"max_tokens":2,"echo":true,"logprobs":2,"n":2,"best_of":4,"seed":4}`,
		`{"model":"base","prompt":[1,5,9,2,7],"max_tokens":0,"echo":true,"logprobs":2,"n":3}`,
	} {
		c := f.complete(t, body)
		for _, ch := range c.Choices {
			want := one.Choices[0].Logprobs
			for i := range 5 {
				if (ch.Logprobs.TokenLogprobs[i] == nil) != (want.TokenLogprobs[i] == nil) || i > 0 && *ch.Logprobs.TokenLogprobs[i] != *want.TokenLogprobs[i] || fmt.Sprint(ch.Logprobs.TopLogprobs[i]) != fmt.Sprint(want.TopLogprobs[i]) {
					t.Errorf("%s: choice %d, prompt token %d: %v %v, a single choice's %v %v", body, ch.Index, i, ch.Logprobs.TokenLogprobs[i], ch.Logprobs.TopLogprobs[i], want.TokenLogprobs[i], want.TopLogprobs[i])
				}
			}
		}
	}
	f.srv.metrics.mu.Lock()
	c := f.srv.metrics.byModel["base"]
	completed, first := c.completed, c.firstTokens
	f.srv.metrics.mu.Unlock()
	if completed != 4 || first != 3 {
		t.Errorf("%d completed requests, %d counted in the time to the first token; want 4 and 3", completed, first)
	}
}
