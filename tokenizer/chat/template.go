package chat

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits bound what rendering one template may cost; a zero field takes
// its default.
type Limits struct {
	MaxTemplateBytes int // the template's source (default 1 MiB)
	MaxSteps         int // statements and expressions evaluated per render (default 10 million)
	MaxOutputBytes   int // the rendered text, and any value built on the way (default 64 MiB)
	// MaxAllocBytes bounds the text and lists built over a render, all
	// together: each string's bytes and 16 bytes a list item, whether kept
	// or not (default 256 MiB). It bounds the memory a render takes and
	// the copying it does.
	MaxAllocBytes int
}

// DefaultLimits are the limits Parse applies.
var DefaultLimits = Limits{MaxTemplateBytes: 1 << 20, MaxSteps: 10_000_000, MaxOutputBytes: 64 << 20, MaxAllocBytes: 256 << 20}

// Error is an error in a template, while parsing or rendering it: the
// template's name, the line (1-based; 0 when unknown) and what is wrong.
type Error struct {
	Template string
	Line     int
	Msg      string
	// Raised is set when the template called raise_exception.
	Raised *RaisedError
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.Template, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Template, e.Msg)
}

// Unwrap returns the RaisedError of a raise_exception, if any.
func (e *Error) Unwrap() error {
	if e.Raised != nil {
		return e.Raised
	}
	return nil
}

// Template is a parsed template, safe for concurrent rendering.
type Template struct {
	name   string
	src    string
	body   []node
	limits Limits
	now    func() time.Time
}

// Parse parses a template's source; name is used in errors.
func Parse(name, src string) (*Template, error) {
	return ParseWithLimits(name, src, DefaultLimits)
}

// ParseWithLimits is Parse with other limits.
func ParseWithLimits(name, src string, limits Limits) (*Template, error) {
	if limits.MaxTemplateBytes <= 0 {
		limits.MaxTemplateBytes = DefaultLimits.MaxTemplateBytes
	}
	if limits.MaxSteps <= 0 {
		limits.MaxSteps = DefaultLimits.MaxSteps
	}
	if limits.MaxOutputBytes <= 0 {
		limits.MaxOutputBytes = DefaultLimits.MaxOutputBytes
	}
	if limits.MaxAllocBytes <= 0 {
		limits.MaxAllocBytes = DefaultLimits.MaxAllocBytes
	}
	if len(src) > limits.MaxTemplateBytes {
		return nil, &Error{Template: name, Msg: fmt.Sprintf("template of %d bytes is longer than %d (the renderer's limit)", len(src), limits.MaxTemplateBytes)}
	}
	if !utf8.ValidString(src) {
		return nil, &Error{Template: name, Msg: "template is not valid UTF-8"}
	}
	toks, err := lex(name, jinjaSource(src))
	if err != nil {
		return nil, err
	}
	body, err := parse(name, toks)
	if err != nil {
		return nil, err
	}
	return &Template{name: name, src: src, body: body, limits: limits, now: time.Now}, nil
}

// jinjaSource is the text Jinja reads of a template's source: each
// "\r\n" and lone "\r" a "\n", and one final newline dropped (as
// keep_trailing_newline=False, Hugging Face's setting, does).
func jinjaSource(src string) string {
	src = strings.ReplaceAll(src, "\r\n", "\n")
	src = strings.ReplaceAll(src, "\r", "\n")
	return strings.TrimSuffix(src, "\n")
}

// SourceText is the template's text.
func (t *Template) SourceText() string { return t.src }

// Name is the name the template was parsed with.
func (t *Template) Name() string { return t.name }

// Render renders the template with the given variables (Values: see
// FromJSON; Go strings, bools, ints and float64s, []any and *Dict).
func (t *Template) Render(vars map[string]any) (string, error) {
	var out strings.Builder
	g := &scope{vars: map[string]any{}}
	for k, v := range vars {
		g.vars[k] = normalize(v)
	}
	r := &renderer{t: t, out: &out, global: g}
	err := r.execBody(t.body, &scope{vars: map[string]any{}, parent: g})
	var lc errLoopControl
	if errors.As(err, &lc) {
		return "", &Error{Template: t.name, Msg: "break or continue outside a loop"}
	}
	if err != nil {
		return "", err
	}
	return out.String(), nil
}

// normalize turns Go ints into int64.
func normalize(v any) any {
	switch v := v.(type) {
	case int:
		return int64(v)
	case int32:
		return int64(v)
	case []string:
		out := make([]any, len(v))
		for i, s := range v {
			out[i] = s
		}
		return out
	}
	return v
}

// ChatTemplate is a model's chat template with the special tokens Hugging
// Face's apply_chat_template passes to it.
type ChatTemplate struct {
	*Template
	// Source names where the template came from (a file, and which of a
	// tokenizer_config.json's templates).
	Source string
	// SHA256 identifies what renders: the sha256 (hex) of the template's
	// text followed by the special tokens' names and values, each ended
	// by a zero byte, in name order.
	SHA256 string
	// SpecialTokens are bos_token, eos_token, unk_token, pad_token … as
	// tokenizer_config.json names them (the template's variables).
	SpecialTokens map[string]string
}

// specialTokenNames are the tokenizer_config.json fields Hugging Face
// passes to chat templates.
var specialTokenNames = []string{"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}

// FromTokenizerConfig reads the chat template of a tokenizer_config.json
// (name is used in errors): "chat_template", a string or a list of named
// templates ({"name": …, "template": …}), of which the one named
// "default" is taken, and the special tokens.
func FromTokenizerConfig(name string, data []byte) (*ChatTemplate, error) {
	var c map[string]json.RawMessage
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%s: not a tokenizer_config.json: %w", name, err)
	}
	raw, ok := c["chat_template"]
	if !ok || string(raw) == "null" {
		return nil, fmt.Errorf("%s: no \"chat_template\" (the model ships no chat template; give one with --chat-template FILE.jinja)", name)
	}
	var src, which string
	if err := json.Unmarshal(raw, &src); err != nil {
		var named []struct {
			Name     string `json:"name"`
			Template string `json:"template"`
		}
		if err := json.Unmarshal(raw, &named); err != nil {
			return nil, fmt.Errorf("%s: \"chat_template\" is neither a string nor a list of {\"name\", \"template\"}", name)
		}
		var names []string
		for _, n := range named {
			names = append(names, n.Name)
			if n.Name == "default" {
				src, which = n.Template, "default"
			}
		}
		if which == "" {
			return nil, fmt.Errorf("%s: \"chat_template\" lists templates %q but none named \"default\"", name, names)
		}
	}
	source := name
	if which != "" {
		source = fmt.Sprintf("%s (chat_template %q)", name, which)
	}
	tmpl, err := Parse(source, src)
	if err != nil {
		return nil, err
	}
	return newChatTemplate(tmpl, source, src, SpecialTokensOf(data)), nil
}

// FromSource makes a ChatTemplate of a template's text (a .jinja file),
// with the special tokens given.
func FromSource(name, src string, special map[string]string) (*ChatTemplate, error) {
	tmpl, err := Parse(name, src)
	if err != nil {
		return nil, err
	}
	return newChatTemplate(tmpl, name, src, special), nil
}

// SpecialTokensOf reads the special tokens of a tokenizer_config.json.
func SpecialTokensOf(data []byte) map[string]string {
	var c map[string]json.RawMessage
	out := map[string]string{}
	if json.Unmarshal(data, &c) != nil {
		return out
	}
	for _, k := range specialTokenNames {
		if s := configToken(c[k]); s != "" {
			out[k] = s
		}
	}
	return out
}

func configToken(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.Content
	}
	return ""
}

func newChatTemplate(tmpl *Template, source, src string, special map[string]string) *ChatTemplate {
	ct := &ChatTemplate{Template: tmpl, Source: source, SpecialTokens: map[string]string{}}
	h := sha256.New()
	h.Write([]byte(src))
	h.Write([]byte{0})
	for _, k := range slices.Sorted(maps.Keys(special)) {
		ct.SpecialTokens[k] = special[k]
		h.Write([]byte(k + "\x00" + special[k] + "\x00"))
	}
	ct.SHA256 = hex.EncodeToString(h.Sum(nil))
	return ct
}

// RenderChat renders a conversation as Hugging Face's
// apply_chat_template(messages, tools=tools, add_generation_prompt=…,
// tokenize=False) does: messages is a list of message dicts, tools nil
// (None in the template) or a list; extra holds other variables. As
// there, tools and documents are always defined, None when not given.
func (c *ChatTemplate) RenderChat(messages []any, tools any, addGenerationPrompt bool, extra map[string]any) (string, error) {
	vars := map[string]any{"messages": messages, "add_generation_prompt": addGenerationPrompt, "tools": tools, "documents": nil}
	for k, v := range c.SpecialTokens {
		vars[k] = v
	}
	for k, v := range extra {
		vars[k] = v
	}
	return c.Render(vars)
}
