package train

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/dstune/dstune/internal/regfile"
	"github.com/dstune/dstune/tokenizer/chat"
)

// maxChatTemplateFile bounds a --chat-template file (a template, or a
// tokenizer_config.json holding one).
const maxChatTemplateFile = 16 << 20

// loadChatTemplate finds the chat template that renders "messages" rows:
// Config.ChatTemplate's file (a Jinja template, or a
// tokenizer_config.json holding "chat_template"), else the "chat_template"
// of the tokenizer_config.json beside the tokenizer. The special tokens
// it is given (bos_token, eos_token …) are the tokenizer_config.json's.
// Without a template, missing says why, for the rows that need one; a
// template given with --chat-template that cannot be read is an error.
func loadChatTemplate(cfg *Config) (ct *chat.ChatTemplate, missing string, err error) {
	beside := ""
	if cfg.Tokenizer != "" {
		dir := filepath.Dir(cfg.Tokenizer)
		if st, err := os.Stat(cfg.Tokenizer); err == nil && st.IsDir() {
			dir = cfg.Tokenizer
		}
		beside = filepath.Join(dir, "tokenizer_config.json")
	}
	var besideData []byte
	if beside != "" {
		besideData, err = regfile.ReadFile(beside, maxChatTemplateFile)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, "", err
		}
	}
	if cfg.ChatTemplate != "" {
		if cfg.Tokenizer == "" {
			return nil, "", errors.New("--chat-template needs --tokenizer, which encodes the rendered conversations")
		}
		data, err := regfile.ReadFile(cfg.ChatTemplate, maxChatTemplateFile)
		if err != nil {
			return nil, "", fmt.Errorf("--chat-template: %w", err)
		}
		// A tokenizer_config.json is a JSON object; a template may start
		// with "{" too ("{%- for …", "{{ bos_token }}").
		if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' && json.Valid(trimmed) {
			ct, err := chat.FromTokenizerConfig(cfg.ChatTemplate, data)
			if err != nil {
				return nil, "", fmt.Errorf("--chat-template: %w", err)
			}
			if len(ct.SpecialTokens) == 0 && besideData != nil {
				ct, err = chat.FromSource(ct.Source, ct.SourceText(), chat.SpecialTokensOf(besideData))
			}
			return ct, "", err
		}
		ct, err := chat.FromSource(cfg.ChatTemplate, string(data), chat.SpecialTokensOf(besideData))
		if err != nil {
			return nil, "", fmt.Errorf("--chat-template: %w", err)
		}
		return ct, "", nil
	}
	switch {
	case cfg.Tokenizer == "":
		return nil, "give --tokenizer (with a tokenizer_config.json holding \"chat_template\" beside it) or --chat-template FILE with it", nil
	case besideData == nil:
		return nil, fmt.Sprintf("no %s beside the tokenizer: give --chat-template FILE (a .jinja template or a tokenizer_config.json)", beside), nil
	}
	ct, err = chat.FromTokenizerConfig(beside, besideData)
	if err != nil {
		// Only rows that need the template fail.
		return nil, err.Error(), nil
	}
	return ct, "", nil
}

// recordChatTemplate records in the run's configuration the chat
// template that rendered the data's "messages" rows, refusing, on a
// resumed run, a template other than the one the run started with.
func (r *runner) recordChatTemplate(ct *chat.ChatTemplate, sets ...*Dataset) error {
	used := false
	for _, ds := range sets {
		used = used || ds != nil && ds.chatRows > 0
	}
	if !used || ct == nil {
		return nil
	}
	cfg := &r.cfg
	if r.opts.Resume && cfg.ChatTemplateSHA256 != "" && cfg.ChatTemplateSHA256 != ct.SHA256 {
		return fmt.Errorf("resume: the chat template (%s) has changed since the run started (sha256 %s, config.json says %s)", ct.Source, ct.SHA256, cfg.ChatTemplateSHA256)
	}
	cfg.ChatTemplateSHA256 = ct.SHA256
	return nil
}
