package serve

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// codePoints is a generate.Tokenizer whose ids are the text's code points.
type codePoints struct{}

func (codePoints) Encode(text string) ([]int, error) {
	var ids []int
	for _, r := range text {
		ids = append(ids, int(r))
	}
	return ids, nil
}

func (codePoints) Decode(ids []int) (string, error) {
	var b strings.Builder
	for _, id := range ids {
		b.WriteRune(rune(id))
	}
	return b.String(), nil
}

// A lone surrogate escape (\ud800, \udc00) in the prompt or a stop string
// stands for no character: encoding/json decoded it as U+FFFD and the
// server generated from a replacement character with status 200. It is a
// bad request now, as are bytes that are not UTF-8; a surrogate pair is
// one character.
func TestPromptLoneSurrogates(t *testing.T) {
	s := &Server{cfg: Config{Tokenizer: codePoints{}}}
	for _, c := range []struct {
		raw, want string
	}{
		{`"Once \ud800 upon"`, `prompt: lone surrogate escape \ud800 at byte 7 of its JSON`},
		{`"x\udc00"`, `prompt: lone surrogate escape \udc00 at byte 3`},
		{`"\uD800\u0041"`, `prompt: lone surrogate escape \uD800 at byte 2`},
		{"\"Once \xff\"", `prompt: not valid UTF-8 at byte 7 of its JSON`},
	} {
		ids, err := s.prompts(json.RawMessage(c.raw))
		he, ok := err.(*httpError)
		if !ok || he.status != 400 || !strings.Contains(he.msg, c.want) {
			t.Errorf("%s: %v, %v; want a 400 saying %q", c.raw, ids, err, c.want)
		}
	}
	ids, err := s.prompts(json.RawMessage(`"a\ud83d\ude00\\ud800"`))
	if want := []int64{'a', 0x1F600, '\\', 'u', 'd', '8', '0', '0'}; err != nil || len(ids) != 1 || !slices.Equal(ids[0], want) {
		t.Errorf("pair and escaped backslash: %v, %v; want %v", ids, err, want)
	}
	for _, raw := range []string{`"\ud800"`, `["a","b\udfff"]`} {
		_, err := stopStrings(json.RawMessage(raw))
		if he, ok := err.(*httpError); !ok || he.status != 400 || !strings.Contains(he.msg, "stop: lone surrogate escape") {
			t.Errorf("stop %s: %v", raw, err)
		}
	}
	if stops, err := stopStrings(json.RawMessage(`["\ud83d\ude00"]`)); err != nil || !slices.Equal(stops, []string{"😀"}) {
		t.Errorf("stop pair: %q, %v", stops, err)
	}
}

// Over HTTP the request is answered 400 with the message, before the
// server looks for a tokenizer.
func TestPromptLoneSurrogateRequest(t *testing.T) {
	f := newFixture(t, 0)
	for _, c := range []struct{ body, says string }{
		{`{"model":"base","prompt":"Once \ud800 upon"}`, `prompt: lone surrogate escape \\ud800 at byte 7`},
		{`{"model":"base","prompt":[1],"stop":"\udc00"}`, `stop: lone surrogate escape \\udc00 at byte 2`},
	} {
		status, body := f.post(t, c.body)
		if status != 400 || !strings.Contains(string(body), c.says) {
			t.Errorf("%s: status %d %s, want 400 saying %s", c.body, status, body, c.says)
		}
	}
}
