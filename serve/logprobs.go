package serve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/dstune/dstune/generate"
)

// choiceLogprobs are a choice's logprobs as OpenAI's completions give
// them: per token, its name, log-probability (null for a prompt's first
// token, which has no context), the most likely tokens' (and its own), and
// where its text starts, in characters from the start of the prompt's
// text.
type choiceLogprobs struct {
	Tokens        []string      `json:"tokens"`
	TokenLogprobs []*float64    `json:"token_logprobs"`
	TopLogprobs   []topLogprobs `json:"top_logprobs"`
	TextOffset    []int         `json:"text_offset"`
}

// newChoiceLogprobs has empty lists rather than nulls: a completion that
// ends at once (an end token drawn first) answers [] for each.
func newChoiceLogprobs() *choiceLogprobs {
	return &choiceLogprobs{Tokens: []string{}, TokenLogprobs: []*float64{}, TopLogprobs: []topLogprobs{}, TextOffset: []int{}}
}

// minLogprob is the least logprob written: a token the model rules out
// (logit -Inf) has -Inf, which JSON cannot hold.
const minLogprob = -9999

// jsonLogprob is lp as it is written: NaN (the model computed NaN) as
// null.
func jsonLogprob(lp float64) *float64 {
	if math.IsNaN(lp) {
		return nil
	}
	lp = max(lp, minLogprob)
	return &lp
}

// addPrompt adds the prompt's tokens, lps holding those of the second
// on, and returns the characters of text they add.
func (c *choiceLogprobs) addPrompt(names tokenNames, prompt []int64, lps []generate.TokenLogprobs, k int) int {
	offset := 0
	for i, id := range prompt {
		if i == 0 {
			name, added := names.at(nil).name(id)
			c.Tokens = append(c.Tokens, name)
			c.TokenLogprobs = append(c.TokenLogprobs, nil)
			c.TopLogprobs = append(c.TopLogprobs, nil)
			c.TextOffset = append(c.TextOffset, 0)
			offset = utf8.RuneCountInString(added)
			continue
		}
		if i-1 < len(lps) {
			offset = c.add(names, prompt[:i], lps[i-1], k, offset)
		}
	}
	return offset
}

// add adds the token lp is of, following context, at offset characters;
// it returns the offset after it.
func (c *choiceLogprobs) add(names tokenNames, context []int64, lp generate.TokenLogprobs, k int, offset int) int {
	at := names.at(context)
	name, added := at.name(lp.Token)
	c.Tokens = append(c.Tokens, name)
	c.TokenLogprobs = append(c.TokenLogprobs, jsonLogprob(lp.Logprob))
	c.TextOffset = append(c.TextOffset, offset)
	top := topLogprobs{}
	own := false
	for _, t := range lp.Top[:min(k, len(lp.Top))] {
		n, _ := at.name(t.Token)
		top = append(top, namedLogprob{n, t.Logprob})
		own = own || t.Token == lp.Token
	}
	if !own {
		// OpenAI lists the chosen token too: up to k+1 entries.
		top = append(top, namedLogprob{name, lp.Logprob})
	}
	c.TopLogprobs = append(c.TopLogprobs, top)
	return offset + utf8.RuneCountInString(added)
}

// topLogprobs is one position's most likely tokens, written as a JSON
// object by name, the most likely first; a name two tokens share keeps
// the first's (the likelier). Nil is null.
type topLogprobs []namedLogprob

type namedLogprob struct {
	name    string
	logprob float64
}

func (t topLogprobs) MarshalJSON() ([]byte, error) {
	if t == nil {
		return []byte("null"), nil
	}
	var b bytes.Buffer
	b.WriteByte('{')
	seen := map[string]bool{}
	for _, e := range t {
		if seen[e.name] {
			continue
		}
		seen[e.name] = true
		if len(seen) > 1 {
			b.WriteByte(',')
		}
		key, err := json.Marshal(e.name)
		if err != nil {
			return nil, err
		}
		val, err := json.Marshal(jsonLogprob(e.logprob))
		if err != nil {
			return nil, err
		}
		b.Write(key)
		b.WriteByte(':')
		b.Write(val)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// vocabulary is implemented by tokenizers that tell a token's string as
// their vocabulary stores it ("<0xE4>", "<s>", "▁the").
type vocabulary interface {
	Token(id int) string
}

// tokenNames names tokens in logprobs. With a tokenizer a token's name is
// the text it adds after the tokens before it (decoding a short window of
// them with and without it), so that the names of a sequence add up to its
// text. A token that adds no text is named by its vocabulary string when
// the tokenizer tells it ("<s>"); a token that is part of a character but
// does not complete it alone — a byte token of a character several bytes
// long — as "bytes:\xe4", OpenAI's way, when the tokenizer tells its byte,
// else by its text decoded alone (U+FFFD for the incomplete bytes).
// Without a tokenizer a token's name is its id in decimal.
type tokenNames struct {
	tok   generate.Tokenizer
	bytes generate.ByteTokens
	vocab vocabulary
}

func (s *Server) tokenNames() tokenNames {
	n := tokenNames{tok: s.cfg.Tokenizer}
	n.bytes, _ = s.cfg.Tokenizer.(generate.ByteTokens)
	n.vocab, _ = s.cfg.Tokenizer.(vocabulary)
	return n
}

// Names are decoded in a window of the tokens before: nameWindow of them,
// more to begin before a run of byte tokens, up to maxNameWindow.
const (
	nameWindow    = 8
	maxNameWindow = 32
)

// naming is the context tokens are named in.
type naming struct {
	names     tokenNames
	window    []int
	prev      string // the window's text
	prevFinal int    // its bytes before an incomplete character
}

func (n tokenNames) at(context []int64) naming {
	if n.tok == nil {
		return naming{names: n}
	}
	lo := max(0, len(context)-nameWindow)
	for lo > 0 && len(context)-lo < maxNameWindow && n.bytes != nil && n.bytes.IsByteToken(int(context[lo])) {
		lo--
	}
	window := make([]int, len(context)-lo, len(context)-lo+1)
	for i, id := range context[lo:] {
		window[i] = int(id)
	}
	prev, _ := n.tok.Decode(window)
	return naming{names: n, window: window, prev: prev, prevFinal: len(prev) - generate.IncompleteTail(prev)}
}

// name returns token id's name after the context and the text it adds.
func (c naming) name(id int64) (name, added string) {
	n := c.names
	if n.tok == nil {
		return strconv.FormatInt(id, 10), ""
	}
	cur, _ := n.tok.Decode(append(c.window, int(id)))
	curFinal := len(cur) - generate.IncompleteTail(cur)
	from := c.prevFinal
	if !strings.HasPrefix(cur, c.prev[:c.prevFinal]) {
		// The decoder rewrote earlier text: the token adds what follows
		// the part both share.
		from = 0
		for from < min(len(cur), c.prevFinal) && cur[from] == c.prev[from] {
			from++
		}
	}
	if curFinal > from {
		added = cur[from:curFinal]
	}
	partial := curFinal < len(cur) || c.prevFinal < len(c.prev) && !strings.HasPrefix(cur, c.prev)
	switch {
	case !partial && added == "" && n.vocab != nil:
		return n.vocab.Token(int(id)), ""
	case !partial:
		return added, added
	}
	if n.vocab != nil && n.bytes != nil && n.bytes.IsByteToken(int(id)) {
		if b, ok := byteOf(n.vocab.Token(int(id))); ok {
			return fmt.Sprintf(`bytes:\x%02x`, b), added
		}
	}
	alone, _ := n.tok.Decode([]int{int(id)})
	return alone, added
}

// byteOf reads a byte token "<0xE4>".
func byteOf(token string) (byte, bool) {
	hex, ok := strings.CutPrefix(token, "<0x")
	if !ok || len(hex) != 3 || hex[2] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(hex[:2], 16, 8)
	return byte(v), err == nil
}
