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

// maxChatRender caps the text rendered for one "messages" row (its whole
// conversation and, for each assistant turn, the conversation before and
// through it), so that a row of many turns cannot take quadratic time.
var maxChatRender = 64 << 20

// contentSentinel stands in for an assistant turn's content when the
// content holds a special token's text: the renderings with and without
// it agree after the content, which tells where the content ends.
const contentSentinel = "dstune sentinel: this turn's content"

// encodeChat renders a "messages" row with the chat template, as Hugging
// Face's apply_chat_template(messages, tools=tools, tokenize=True) does:
// add_generation_prompt false, encoded without the tokenizer's own
// template (the chat template writes BOS itself), special tokens in the
// text taken as their ids. The loss mask marks the assistant turns
// (those without "weight": 0), each found by chatRow.turn; turns that
// start at or past opts.MaxLen (> 0), which batches cut off, are left
// unmarked without rendering them.
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
	row := &chatRow{opts: opts, messages: messages}
	if !isAbsent(rawTools) {
		if row.tools, err = chat.FromJSON(rawTools); err != nil {
			return nil, nil, fmt.Errorf(`"tools": %v`, err)
		}
		if _, ok := row.tools.([]any); !ok {
			return nil, nil, errors.New(`"tools": want an array of tool definitions`)
		}
	}
	row.special, _ = opts.Tokenizer.(specialTokens)
	if row.full, err = row.encode(len(messages), -1, false); err != nil {
		return nil, nil, err
	}
	mask = make([]int, len(row.full))
	turns, past := 0, false
	for i, m := range messages {
		if role, _ := m.(*chat.Dict).Get("role"); role != "assistant" || !weights[i] {
			continue
		}
		turns++
		if past {
			continue
		}
		turn, err := row.turn(i)
		if err != nil {
			return nil, nil, err
		}
		if past = turn.start >= turn.end; past {
			continue
		}
		for j := turn.start; j < turn.end; j++ {
			mask[j] = 1
		}
	}
	if turns == 0 {
		return nil, nil, errors.New(`"messages" has no assistant turn to train on (the loss counts the assistant's turns)`)
	}
	return row.full, mask, nil
}

// chatRow is a "messages" row being encoded: full is its whole
// conversation's tokens, rendered the text of every rendering so far.
type chatRow struct {
	opts     DataOptions
	messages []any
	tools    any
	special  specialTokens
	full     []int
	rendered int
}

// encode renders messages[:upTo], with messages[sentinel]'s content
// replaced by contentSentinel when sentinel ≥ 0, and encodes it.
func (c *chatRow) encode(upTo, sentinel int, generationPrompt bool) ([]int, error) {
	messages := c.messages[:upTo]
	if sentinel >= 0 {
		messages = append([]any(nil), messages...)
		orig := messages[sentinel].(*chat.Dict)
		m := chat.NewDict()
		for _, k := range orig.Keys() {
			v, _ := orig.Get(k)
			m.Set(k, v)
		}
		m.Set("content", contentSentinel)
		messages[sentinel] = m
	}
	text, err := c.opts.Chat.RenderChat(messages, c.tools, generationPrompt, nil)
	if err != nil {
		what := "the conversation"
		if upTo < len(c.messages) || generationPrompt {
			what = fmt.Sprintf("messages[0:%d]", upTo)
		}
		return nil, fmt.Errorf("rendering %s with the chat template: %w", what, err)
	}
	if c.rendered += len(text); c.rendered > maxChatRender {
		return nil, fmt.Errorf(`"messages": finding the assistant turns renders the conversation up to each, over %d MiB of text for this row (the limit): split the conversation, or give --max-len, past which turns are not rendered`, maxChatRender>>20)
	}
	return encodeText(c.opts.Tokenizer, "messages", text, false)
}

// turn finds the tokens of the assistant turn messages[i] in c.full; an
// empty turn when it starts at or past c.opts.MaxLen (> 0).
//
// The turn starts where the conversation before it, rendered with the
// generation prompt, ends: its tokens must be a prefix of the whole's,
// or, for a template whose prompt opens a block the whole does not keep
// (DeepSeek-R1's "<think>\n"), the whole must render the conversation
// before the turn and then part of the prompt, and the turn starts where
// the two part.
//
// It ends at the first special token (the end-of-turn marker, included)
// after its content, within the tokens the conversation up to and
// including it renders to as the whole does — or, where that rendering
// differs from the whole's right after the prompt (a template that
// renders a last turn otherwise, as Qwen 3 its reasoning), the
// conversation through the next message; failing both, the first
// special token of the whole after the prompt. Where the content holds a
// special token's text, which the tokenizer reads as that token, the
// content's end is where the renderings with the content and with
// contentSentinel in its place agree to the end.
func (c *chatRow) turn(i int) (chatTurn, error) {
	full, maxLen := c.full, c.opts.MaxLen
	p, err := c.encode(i, -1, true)
	if err != nil {
		return chatTurn{}, err
	}
	start := commonPrefix(p, full)
	if maxLen > 0 && start >= maxLen {
		return chatTurn{start: start, end: start}, nil
	}
	if start < len(p) {
		before, err := c.encode(i, -1, false)
		if err != nil {
			return chatTurn{}, err
		}
		if len(before) >= start || !equalInts(before, p[:len(before)]) {
			return chatTurn{}, fmt.Errorf("messages[%d] (assistant): the chat template renders the conversation before it, with the generation prompt, as other than the start of the whole conversation (they differ from token %d), so the turn's tokens cannot be told from the prompt's", i, start)
		}
	}
	content, _ := c.messages[i].(*chat.Dict).Get("content")
	useSentinel := false
	if s, ok := content.(string); ok && c.special != nil {
		own, err := encodeText(c.opts.Tokenizer, "messages", s, false)
		if err != nil {
			return chatTurn{}, fmt.Errorf("messages[%d].content: %w", i, err)
		}
		useSentinel = firstSpecial(own, 0, len(own), c.special) < len(own)
	}
	for upTo := i + 1; upTo <= min(i+2, len(c.messages)); upTo++ {
		q, err := c.encode(upTo, -1, false)
		if err != nil {
			return chatTurn{}, err
		}
		agree := commonPrefix(q, full)
		if agree <= start {
			continue // this turn renders otherwise than in the whole
		}
		from := start
		if useSentinel {
			qs, err := c.encode(upTo, i, false)
			if err != nil {
				return chatTurn{}, err
			}
			contentEnd := len(q) - commonSuffix(q, qs)
			if contentEnd > agree {
				continue
			}
			from = max(from, contentEnd)
		}
		return chatTurn{start: start, end: firstSpecial(full, from, agree, c.special)}, nil
	}
	end := firstSpecial(full, start, len(full), c.special)
	if end == len(full) && (c.special == nil || end == start || !c.special.IsSpecial(full[end-1])) {
		return chatTurn{}, fmt.Errorf("messages[%d] (assistant): the chat template renders the conversation up to this turn otherwise than the whole conversation's start, and no special token marks the turn's end in the whole, so its tokens cannot be found", i)
	}
	return chatTurn{start: start, end: end}, nil
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

func commonSuffix(a, b []int) int {
	n := 0
	for n < len(a) && n < len(b) && a[len(a)-1-n] == b[len(b)-1-n] {
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
