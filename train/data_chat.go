package train

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dstune/dstune/tokenizer/chat"
)

// specialTokens tells special tokens (a chat template's end-of-turn
// markers) from the others; package tokenizer's Tokenizer does.
type specialTokens interface {
	IsSpecial(id int) bool
}

// chatTurn is the span [start, end) of an assistant turn's tokens.
type chatTurn struct{ start, end int }

// encodeChat renders a "messages" row with the chat template, as Hugging
// Face's apply_chat_template(messages, tools=tools, tokenize=True) does:
// add_generation_prompt false, encoded without the tokenizer's own
// template (the chat template writes BOS itself), special tokens in the
// text taken as their ids. The loss mask marks the assistant turns
// (those without "weight": 0): each starts where the conversation before
// it, rendered with the generation prompt, ends — its tokens must be a
// prefix of the whole's — and runs to its first special token (the
// end-of-turn marker, included), within the tokens the conversation up
// to and including it renders to as the whole does; where that
// rendering differs from the whole's right after the prompt (a template
// that renders a last turn otherwise, as Qwen 3 its reasoning), the turn
// is the whole's tokens from the prompt to the first special token.
func encodeChat(opts DataOptions, rawMessages, rawTools json.RawMessage) (ids, mask []int, err error) {
	if opts.Task != TaskLM {
		return nil, nil, errors.New(`"messages" is for the lm task (use --task lm)`)
	}
	if opts.Chat == nil {
		if opts.ChatMissing != "" {
			return nil, nil, fmt.Errorf(`"messages" needs a chat template: %s`, opts.ChatMissing)
		}
		return nil, nil, errors.New(`"messages" needs a chat template: give --tokenizer with a tokenizer_config.json holding "chat_template" beside it, or --chat-template FILE`)
	}
	if opts.Tokenizer == nil {
		return nil, nil, errors.New(`"messages" needs --tokenizer to encode the rendered conversation`)
	}
	messages, weights, err := readMessages(rawMessages)
	if err != nil {
		return nil, nil, err
	}
	var tools any
	if !isAbsent(rawTools) {
		if tools, err = chat.FromJSON(rawTools); err != nil {
			return nil, nil, fmt.Errorf(`"tools": %v`, err)
		}
		if _, ok := tools.([]any); !ok {
			return nil, nil, errors.New(`"tools": want an array of tool definitions`)
		}
	}
	encode := func(upTo int, generationPrompt bool) ([]int, error) {
		text, err := opts.Chat.RenderChat(messages[:upTo], tools, generationPrompt, nil)
		if err != nil {
			what := "the conversation"
			if upTo < len(messages) {
				what = fmt.Sprintf("messages[0:%d]", upTo)
			}
			return nil, fmt.Errorf("rendering %s with the chat template: %w", what, err)
		}
		return encodeText(opts.Tokenizer, "messages", text, false)
	}
	full, err := encode(len(messages), false)
	if err != nil {
		return nil, nil, err
	}
	mask = make([]int, len(full))
	special, _ := opts.Tokenizer.(specialTokens)
	turns := 0
	for i, m := range messages {
		if role, _ := m.(*chat.Dict).Get("role"); role != "assistant" || !weights[i] {
			continue
		}
		turn, err := findTurn(full, special, i, func() ([]int, error) { return encode(i, true) }, func() ([]int, error) { return encode(i+1, false) })
		if err != nil {
			return nil, nil, err
		}
		for j := turn.start; j < turn.end; j++ {
			mask[j] = 1
		}
		turns++
	}
	if turns == 0 {
		return nil, nil, errors.New(`"messages" has no assistant turn to train on (the loss counts the assistant's turns)`)
	}
	return full, mask, nil
}

// findTurn finds the tokens of the assistant turn messages[i] in full,
// the whole conversation's: prompt renders the conversation before it
// with the generation prompt, upTo the conversation up to and including
// it.
func findTurn(full []int, special specialTokens, i int, prompt, upTo func() ([]int, error)) (chatTurn, error) {
	p, err := prompt()
	if err != nil {
		return chatTurn{}, err
	}
	if len(p) > len(full) || !equalInts(p, full[:len(p)]) {
		return chatTurn{}, fmt.Errorf("messages[%d] (assistant): the chat template renders the conversation before it, with the generation prompt, as other than the start of the whole conversation (they differ from token %d), so the turn's tokens cannot be told from the prompt's", i, commonPrefix(p, full))
	}
	q, err := upTo()
	if err != nil {
		return chatTurn{}, err
	}
	start := len(p)
	end := commonPrefix(q, full)
	if end <= start {
		// The turn renders otherwise as the last one (a template that
		// drops earlier turns' reasoning): take the whole's tokens to
		// the end of the turn.
		end = len(full)
		if firstSpecial(full, start, end, special) == end {
			return chatTurn{}, fmt.Errorf("messages[%d] (assistant): the chat template renders the conversation up to this turn otherwise than the whole conversation's start, and no special token marks the turn's end in the whole, so its tokens cannot be found", i)
		}
	}
	return chatTurn{start: start, end: firstSpecial(full, start, end, special)}, nil
}

// firstSpecial returns the index after the first special token of
// ids[start:end], or end when there is none.
func firstSpecial(ids []int, start, end int, special specialTokens) int {
	if special == nil {
		return end
	}
	for j := start; j < end; j++ {
		if special.IsSpecial(ids[j]) {
			return j + 1
		}
	}
	return end
}

func commonPrefix(a, b []int) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func equalInts(a, b []int) bool { return len(a) == len(b) && commonPrefix(a, b) == len(a) }

// readMessages checks a "messages" field: a non-empty array of objects,
// each with a string "role" and a "content" that is a string, an array
// (of content parts) or null (an assistant turn of tool calls), and an
// optional "weight" of 0 or 1 (OpenAI's: 0 leaves an assistant turn out
// of the loss).
func readMessages(raw json.RawMessage) (messages []any, weights []bool, err error) {
	v, err := chat.FromJSON(raw)
	if err != nil {
		return nil, nil, fmt.Errorf(`"messages": %v`, err)
	}
	list, ok := v.([]any)
	switch {
	case !ok:
		return nil, nil, fmt.Errorf(`"messages": want an array of messages, found %s`, jsonKindOf(v))
	case len(list) == 0:
		return nil, nil, errors.New(`"messages" is empty`)
	}
	weights = make([]bool, len(list))
	for i, m := range list {
		d, ok := m.(*chat.Dict)
		if !ok {
			return nil, nil, fmt.Errorf("messages[%d]: want an object with \"role\" and \"content\", found %s", i, jsonKindOf(m))
		}
		role, ok := d.Get("role")
		if !ok {
			return nil, nil, fmt.Errorf(`messages[%d]: no "role"`, i)
		}
		if _, ok := role.(string); !ok {
			return nil, nil, fmt.Errorf("messages[%d].role: want a string, found %s", i, jsonKindOf(role))
		}
		content, ok := d.Get("content")
		_, hasCalls := d.Get("tool_calls")
		switch content := content.(type) {
		case string:
		case []any:
			for j, part := range content {
				if _, ok := part.(*chat.Dict); !ok {
					return nil, nil, fmt.Errorf("messages[%d].content[%d]: want a content part (an object), found %s", i, j, jsonKindOf(part))
				}
			}
		case nil:
			switch {
			case !ok && !hasCalls:
				return nil, nil, fmt.Errorf(`messages[%d]: no "content"`, i)
			case role != "assistant" || !hasCalls:
				return nil, nil, fmt.Errorf(`messages[%d].content: null, which only an assistant turn with "tool_calls" may have`, i)
			}
		default:
			return nil, nil, fmt.Errorf("messages[%d].content: want a string, an array of parts or null, found %s", i, jsonKindOf(content))
		}
		weights[i] = true
		if w, ok := d.Get("weight"); ok {
			switch w {
			case int64(0), 0.0:
				weights[i] = false
			case int64(1), 1.0:
			default:
				return nil, nil, fmt.Errorf("messages[%d].weight: want 0 or 1, found %s", i, jsonKindOf(w))
			}
		}
	}
	return list, weights, nil
}

// jsonKindOf names a decoded JSON value for an error.
func jsonKindOf(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "a bool"
	case int64, float64:
		return fmt.Sprintf("the number %v", v)
	case string:
		return fmt.Sprintf("the string %q", v)
	case []any:
		return "an array"
	case *chat.Dict:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
