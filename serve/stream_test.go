package serve

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// streamEvents posts body to url and returns the JSON of each event
// before [DONE], by field.
func streamEvents(t *testing.T, url, body string) []map[string]json.RawMessage {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: status %d", body, resp.StatusCode)
	}
	var events []map[string]json.RawMessage
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		switch {
		case !ok:
			continue
		case line == "[DONE]":
			return events
		}
		var ev map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		events = append(events, ev)
	}
	t.Fatalf("%s: the stream ended without [DONE]", body)
	return nil
}

// TestStreamUsage: both routes stream the usage as OpenAI's API does:
// without stream_options.include_usage no event has a usage; with it
// every event has "usage": null but a last one of "choices": [] holding
// the usage an answer without stream gets. The request's seed is in the
// last event. stream_options without stream is refused.
func TestStreamUsage(t *testing.T) {
	f := newFixture(t, 0)
	url := chatServer(t, f, testChat(t))
	for _, route := range []struct{ path, body string }{
		{"/v1/completions", `{"model":"base","prompt":[[1,5],[2]],"n":2,"echo":true,"logprobs":1,"max_tokens":5,"seed":8`},
		{"/v1/chat/completions", `{"model":"base","messages":[{"role":"user","content":"Hi"}],"n":2,"max_tokens":5,"seed":8`},
	} {
		code, b := postJSON(t, url+route.path, route.body+`}`)
		var want struct{ Usage usage }
		if err := json.Unmarshal(b, &want); err != nil || code != http.StatusOK {
			t.Fatalf("%s: %d %s", route.path, code, b)
		}
		for _, opts := range []string{``, `,"stream_options":null`, `,"stream_options":{"include_usage":false}`, `,"stream_options":{}`} {
			events := streamEvents(t, url+route.path, route.body+`,"stream":true`+opts+`}`)
			for k, ev := range events {
				if u, ok := ev["usage"]; ok {
					t.Errorf("%s%s: event %d has the usage %s", route.path, opts, k, u)
				}
			}
			if last := events[len(events)-1]; string(last["seed"]) != "8" || string(last["choices"]) == "[]" {
				t.Errorf("%s%s: last event %s", route.path, opts, last)
			}
		}
		events := streamEvents(t, url+route.path, route.body+`,"stream":true,"stream_options":{"include_usage":true}}`)
		last := events[len(events)-1]
		var got usage
		if err := json.Unmarshal(last["usage"], &got); err != nil || got != want.Usage || string(last["choices"]) != "[]" || string(last["seed"]) != "8" {
			t.Errorf("%s, include_usage: last event %s, want no choices, usage %+v and seed 8", route.path, last, want.Usage)
		}
		for k, ev := range events[:len(events)-1] {
			if u, ok := ev["usage"]; !ok || string(u) != "null" || ev["seed"] != nil {
				t.Errorf("%s, include_usage: event %d has usage %s (given: %v) and seed %s; want null and none", route.path, k, u, ok, ev["seed"])
			}
		}
		code, b = postJSON(t, url+route.path, route.body+`,"stream_options":{"include_usage":true}}`)
		if code != http.StatusBadRequest || !strings.Contains(string(b), "stream_options: only with stream true") {
			t.Errorf("%s: stream_options without stream: %d %s", route.path, code, b)
		}
	}
}
