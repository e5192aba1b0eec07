package serve

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestChoicesSharePrefill: the completions of one prompt (n, best_of,
// with echo's scoring, streamed or not) share one prefill: a request's
// passes are one per prompt (one per chunk of it when scored), then one
// per token of each completion after its first.
func TestChoicesSharePrefill(t *testing.T) {
	f := newFixture(t, 1)
	ids := func(n int) string {
		p := make([]string, n)
		for i := range p {
			p[i] = fmt.Sprint(1 + i*7%60)
		}
		return "[" + strings.Join(p, ",") + "]"
	}
	long, short := ids(37), ids(5) // scored in chunks of 32, 4 and 1; of 4 and 1
	for _, c := range []struct {
		body                           string
		prefills, completions, perEach int
	}{
		{`"prompt":` + long + `,"n":3,"max_tokens":5`, 1, 3, 4},
		{`"prompt":` + long + `,"n":2,"best_of":4,"max_tokens":5`, 1, 4, 4},
		{`"prompt":` + long + `,"n":3,"echo":true,"logprobs":2,"max_tokens":5`, 3, 3, 4},
		{`"prompt":` + long + `,"n":3,"echo":true,"logprobs":2,"max_tokens":0`, 3, 3, 0},
		{`"prompt":[` + long + `,` + short + `],"n":3,"max_tokens":5`, 2, 6, 4},
		{`"prompt":[` + long + `,` + short + `],"n":3,"echo":true,"logprobs":0,"max_tokens":5`, 3 + 2, 6, 4},
		{`"prompt":` + long + `,"n":3,"max_tokens":5,"stream":true`, 1, 3, 4},
	} {
		before := f.srv.sched.Passes()
		code, b := f.post(t, `{"model":"task0","seed":5,`+c.body+`}`)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", c.body, code, b)
		}
		want := c.prefills + c.completions*c.perEach
		if got := f.srv.sched.Passes() - before; got != int64(want) {
			t.Errorf("%s: %d passes, want %d: %d prefilling, %d per completion", c.body, got, want, c.prefills, c.perEach)
		}
	}
}

// choicesApart returns the choices of an answer as JSON objects without
// their index and seed, as the server wrote their values.
func choicesApart(t *testing.T, b []byte) (choices []string, seeds []uint64) {
	t.Helper()
	var a struct{ Choices []map[string]json.RawMessage }
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	for _, c := range a.Choices {
		var seed uint64
		if s, ok := c["seed"]; ok {
			if err := json.Unmarshal(s, &seed); err != nil {
				t.Fatal(err)
			}
		}
		seeds = append(seeds, seed)
		delete(c, "index")
		delete(c, "seed")
		j, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		choices = append(choices, string(j))
	}
	return choices, seeds
}

// TestChoicesMatchAlone: each of n completions (of each prompt of a
// batch) is, bit for bit — text, tokens, logprobs (the echoed prompt's
// included) and finish reason — what a request for one completion of its
// prompt with the seed it names gives, on both routes, for the base model
// and a delta.
func TestChoicesMatchAlone(t *testing.T) {
	f := newFixture(t, 1)
	url := chatServer(t, f, testChat(t))
	for _, model := range []string{"base", "task0"} {
		opts := fmt.Sprintf(`"model":%q,"max_tokens":9,"temperature":1.3,"top_k":40,"presence_penalty":0.5,"logit_bias":{"3":2}`, model)
		prompts := []string{`"Once upon a time"`, `[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]`}
		for _, r := range []struct {
			path, batch, one string
			prompts          int
		}{
			{"/v1/completions", `"prompt":[` + strings.Join(prompts, ",") + `],"echo":true,"logprobs":3`, `"prompt":%s,"echo":true,"logprobs":3`, 2},
			{"/v1/chat/completions", `"messages":[{"role":"user","content":"Tell me a story."}],"logprobs":true,"top_logprobs":3`, `"messages":[{"role":"user","content":"Tell me a story."}],"logprobs":true,"top_logprobs":3`, 1},
		} {
			code, b := postJSON(t, url+r.path, `{`+opts+`,"n":3,"seed":21,`+r.batch+`}`)
			if code != http.StatusOK {
				t.Fatalf("%s: %d %s", r.path, code, b)
			}
			choices, seeds := choicesApart(t, b)
			if len(choices) != 3*r.prompts {
				t.Fatalf("%s: %d choices", r.path, len(choices))
			}
			for k, c := range choices {
				one := r.one
				if r.prompts > 1 {
					one = fmt.Sprintf(r.one, prompts[k/3])
				}
				code, b := postJSON(t, url+r.path, fmt.Sprintf(`{%s,"seed":%d,%s}`, opts, seeds[k], one))
				if code != http.StatusOK {
					t.Fatalf("%s: %d %s", r.path, code, b)
				}
				alone, _ := choicesApart(t, b)
				if len(alone) != 1 || alone[0] != c {
					t.Errorf("%s %s choice %d:\n%s\nalone with its seed %d:\n%s", model, r.path, k, c, seeds[k], alone)
				}
			}
		}
	}
}
