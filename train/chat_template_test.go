package train

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/tokenizer/chat"
	"github.com/dstune/dstune/update"
)

// A word-level tokenizer.json of runVocab tokens, with ChatML's markers
// as special tokens.
const chatTokenizerJSON = `{"model": {"type": "WordLevel", "unk_token": "[UNK]",
 "vocab": {"[UNK]": 0, "<|im_start|>": 1, "<|im_end|>": 2, "user": 3, "assistant": 4, "a": 5, "b": 6, "c": 7, "d": 8, "e": 9, "f": 10, "g": 11}},
 "pre_tokenizer": {"type": "WhitespaceSplit"},
 "added_tokens": [{"id": 1, "content": "<|im_start|>", "special": true}, {"id": 2, "content": "<|im_end|>", "special": true}]}`

const chatRunTemplate = `{% for m in messages %}<|im_start|>{{ m.role }} {{ m.content }}<|im_end|>{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant {% endif %}`

// A run on "messages" rows renders them with the tokenizer_config.json
// beside the tokenizer, records the template in config.json, and a
// resumed run refuses a template that changed.
func TestRunChatTemplateRecorded(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "tokenizer.json")
	config := filepath.Join(dir, "tokenizer_config.json")
	writeConfig := func(template string) {
		data := `{"chat_template": ` + quoteJSON(template) + `, "eos_token": "<|im_end|>"}`
		if err := os.WriteFile(config, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(tok, []byte(chatTokenizerJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	writeConfig(chatRunTemplate)
	var lines []string
	words := []string{"a", "b", "c", "d", "e", "f", "g"}
	for i := range 20 {
		lines = append(lines, `{"messages": [{"role": "user", "content": "`+words[i%7]+` `+words[(i+1)%7]+`"}, {"role": "assistant", "content": "`+words[(i+2)%7]+`"}]}`)
	}
	data := filepath.Join(dir, "chat.jsonl")
	if err := os.WriteFile(data, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	opt, err := update.DefaultOptimizer(update.OptimizerAdamW)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Model: "bigram (test)", Data: data, Task: TaskLM, Method: MethodFull, Tokenizer: tok,
		Optimizer: opt, Schedule: Schedule{Name: ScheduleConstant}, Steps: 2, Batch: 4,
		Seed: 1, Backend: "cpu", Threads: 1, EvalEvery: 2, CheckpointEvery: 2}
	runDir := filepath.Join(dir, "run")
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: runDir, Source: newBigramSource(runVocab, 1)}); err != nil {
		t.Fatal(err)
	}
	stored, err := LoadConfig(runDir)
	if err != nil {
		t.Fatal(err)
	}
	ct, _, err := loadChatTemplate(&cfg)
	if err != nil || ct == nil {
		t.Fatalf("template: %v", err)
	}
	if stored.ChatTemplateSHA256 != ct.SHA256 || len(ct.SHA256) != 64 {
		t.Errorf("config.json's chat_template_sha256 %q, want the template's %q", stored.ChatTemplateSHA256, ct.SHA256)
	}
	writeConfig(strings.Replace(chatRunTemplate, "{{ m.role }} ", "{{ m.role }}  ", 1))
	_, err = Run(context.Background(), cfg, RunOptions{Dir: runDir, Resume: true, Source: newBigramSource(runVocab, 1)})
	if err == nil || !strings.Contains(err.Error(), "resume: the chat template ("+config+") has changed since the run started") {
		t.Errorf("resumed with a changed template: %v", err)
	}
}

func quoteJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// A --chat-template file is a Jinja template unless it is a JSON object:
// templates usually start with "{%" or "{{", as a JSON object does.
func TestChatTemplateFileKinds(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "tokenizer.json")
	if err := os.WriteFile(tok, []byte(chatTokenizerJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	jinja := filepath.Join(dir, "chat.jinja")
	if err := os.WriteFile(jinja, []byte(chatRunTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "config.json")
	if err := os.WriteFile(config, []byte(`{"chat_template": `+quoteJSON(chatRunTemplate)+`}`), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := chat.FromJSON([]byte(`[{"role": "user", "content": "a b"}]`))
	if err != nil {
		t.Fatal(err)
	}
	conversation := v.([]any)
	var rendered []string
	for _, file := range []string{jinja, config} {
		ct, missing, err := loadChatTemplate(&Config{Tokenizer: tok, ChatTemplate: file})
		if err != nil || ct == nil {
			t.Fatalf("%s: %v (%s)", file, err, missing)
		}
		text, err := ct.RenderChat(conversation, nil, true, nil)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		rendered = append(rendered, text)
	}
	if want := "<|im_start|>user a b<|im_end|><|im_start|>assistant "; rendered[0] != want || rendered[1] != want {
		t.Errorf("rendered %q, want %q from both", rendered, want)
	}
}
