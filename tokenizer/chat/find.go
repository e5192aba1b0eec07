package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"

	"github.com/dstune/dstune/internal/regfile"
	"github.com/dstune/dstune/tokenizer"
)

// maxTemplateFile bounds a template file or a tokenizer_config.json read
// for its template.
const maxTemplateFile = 16 << 20

// Find finds the chat template that goes with a tokenizer (tokenizerPath:
// its file, or a directory holding it): file's when file is given (a
// Jinja template, or a tokenizer_config.json holding "chat_template"),
// else the "chat_template" of the tokenizer_config.json beside the
// tokenizer. The special tokens it is given (bos_token, eos_token …) are
// those of the tokenizer_config.json that holds it, else of the one beside
// the tokenizer. Without a template, missing says why, in the words of a
// --chat-template flag; a file given that cannot be read or parsed is an
// error.
func Find(tokenizerPath, file string) (ct *ChatTemplate, missing string, err error) {
	beside := tokenizer.Beside(tokenizerPath, "tokenizer_config.json")
	besideData, err := regfile.ReadFile(beside, maxTemplateFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, "", err
	}
	if file != "" {
		data, err := regfile.ReadFile(file, maxTemplateFile)
		if err != nil {
			return nil, "", fmt.Errorf("--chat-template: %w", err)
		}
		// A tokenizer_config.json is a JSON object; a template may start
		// with "{" too ("{%- for …", "{{ bos_token }}").
		if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' && json.Valid(trimmed) {
			ct, err = FromTokenizerConfig(file, data)
			if err == nil && len(ct.SpecialTokens) == 0 && besideData != nil {
				ct, err = FromSource(ct.Source, ct.SourceText(), SpecialTokensOf(besideData))
			}
		} else {
			ct, err = FromSource(file, string(data), SpecialTokensOf(besideData))
		}
		if err != nil {
			return nil, "", fmt.Errorf("--chat-template: %w", err)
		}
		return ct, "", nil
	}
	if besideData == nil {
		return nil, fmt.Sprintf("no %s beside the tokenizer: give --chat-template FILE (a .jinja template or a tokenizer_config.json)", beside), nil
	}
	if ct, err = FromTokenizerConfig(beside, besideData); err != nil {
		// Only what needs the template fails.
		return nil, err.Error(), nil
	}
	return ct, "", nil
}
