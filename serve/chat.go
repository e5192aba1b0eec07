package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dstune/dstune/generate"
	"github.com/dstune/dstune/tokenizer/chat"
)

// Chat lets a server answer chat completions: a conversation is rendered
// with the model's chat template, as Hugging Face's
// apply_chat_template(messages, tools=tools, add_generation_prompt=True)
// does, and its text, encoded, is the prompt of a completion.
type Chat struct {
	Template *chat.ChatTemplate
	// Encode encodes a rendered conversation as training does: without
	// the tokenizer's own template (the chat template writes BOS), the
	// special tokens in the text as their ids.
	Encode func(text string) ([]int, error)
	// StopTokens end a reply besides Config.StopTokens: the template's
	// end-of-turn token (<|eot_id|>, <|im_end|>, <end_of_turn>).
	StopTokens []int64
}

// MaxTopLogprobs bounds a chat request's top_logprobs (OpenAI's bound).
const MaxTopLogprobs = 20

// chatRequest is the body of POST /v1/chat/completions.
type chatRequest struct {
	Model               string          `json:"model"`
	Messages            json.RawMessage `json:"messages"`
	MaxTokens           json.RawMessage `json:"max_tokens"`
	MaxCompletionTokens json.RawMessage `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	TopK                json.RawMessage `json:"top_k"`
	Seed                json.RawMessage `json:"seed"`
	Stream              bool            `json:"stream"`
	StreamOptions       *streamOptions  `json:"stream_options"`
	Stop                json.RawMessage `json:"stop"`
	N                   json.RawMessage `json:"n"`
	LogitBias           json.RawMessage `json:"logit_bias"`
	PresencePenalty     *float64        `json:"presence_penalty"`
	FrequencyPenalty    *float64        `json:"frequency_penalty"`
	Logprobs            json.RawMessage `json:"logprobs"`
	TopLogprobs         json.RawMessage `json:"top_logprobs"`
	Tools               json.RawMessage `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
}

// chatRoles are the roles a message may have.
var chatRoles = []string{"system", "developer", "user", "assistant", "tool"}

// chatMessage is a reply's message, or a stream's delta of one.
type chatMessage struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type chatChoice struct {
	Index int `json:"index"`
	// Message is a whole reply's, Delta a stream chunk's.
	Message      *chatMessage  `json:"message,omitempty"`
	Delta        *chatMessage  `json:"delta,omitempty"`
	Logprobs     *chatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
	// Seed (dstune's addition, in requests for several replies) is the
	// seed this choice sampled with: sent alone, n 1, it gives this reply.
	Seed *uint64 `json:"seed,omitempty"`
}

type chatCompletion = answer[chatChoice]

// chatLogprobs are a choice's logprobs as OpenAI's chat completions give
// them: per token its name, UTF-8 bytes, logprob and the most likely
// tokens'.
type chatLogprobs struct {
	Content []chatTokenLogprob `json:"content"`
}

type chatTokenLogprob struct {
	Token   string   `json:"token"`
	Logprob *float64 `json:"logprob"`
	Bytes   []int    `json:"bytes"`
	// TopLogprobs is absent in the entries of a top_logprobs list.
	TopLogprobs *[]chatTokenLogprob `json:"top_logprobs,omitempty"`
}

// nameBytes are the bytes of a token's name: "bytes:\xe4" (a byte token
// of an incomplete character) is the byte it names.
func nameBytes(name string) []int {
	b := []byte(name)
	if hex, ok := strings.CutPrefix(name, `bytes:\x`); ok && len(hex) == 2 {
		if v, err := strconv.ParseUint(hex, 16, 8); err == nil {
			b = []byte{byte(v)}
		}
	}
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}

// chatLogprob names the token lp is of, after context, with its k most
// likely alternatives.
func chatLogprob(names tokenNames, context []int64, lp generate.TokenLogprobs, k int) chatTokenLogprob {
	at := names.at(context)
	name, _ := at.name(lp.Token)
	top := []chatTokenLogprob{}
	for _, t := range lp.Top[:min(k, len(lp.Top))] {
		n, _ := at.name(t.Token)
		top = append(top, chatTokenLogprob{Token: n, Logprob: jsonLogprob(t.Logprob), Bytes: nameBytes(n)})
	}
	return chatTokenLogprob{Token: name, Logprob: jsonLogprob(lp.Logprob), Bytes: nameBytes(name), TopLogprobs: &top}
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	created := time.Now().Unix()
	var req chatRequest
	release, ok := s.receive(w, r, &req, func() string { return req.Model })
	if !ok {
		return
	}
	defer release()

	rq, err := s.prepareChat(&req)
	if err != nil {
		s.fail(w, r, req.Model, err)
		return
	}
	id := fmt.Sprintf("chatcmpl-%d-%d", s.started.Unix(), s.nextID.Add(1))
	if rq.stream {
		s.streamChat(w, r, rq, id, created)
		return
	}
	s.answerChat(w, r, rq, id, created)
}

// prepareChat checks a chat request, renders and encodes its
// conversation and makes it the request of a completion of those tokens.
func (s *Server) prepareChat(req *chatRequest) (*request, error) {
	c := s.cfg.Chat
	switch {
	case s.cfg.Tokenizer == nil:
		return nil, badRequest("chat completions need a tokenizer: this server has none (start it with --tokenizer)")
	case c == nil || c.Template == nil:
		why := s.cfg.ChatMissing
		if why == "" {
			why = "start the server with --chat-template FILE, or --tokenizer with a tokenizer_config.json holding \"chat_template\" beside it"
		}
		return nil, badRequest("chat completions need a chat template: %s", why)
	}
	if req.Model == "" {
		return nil, badRequest("model is required: %q for the base model or a delta's name (GET /v1/models lists them)", BaseName)
	}
	messages, err := chatMessages(req.Messages)
	if err != nil {
		return nil, err
	}
	tools, err := chatTools(req.Tools, req.ToolChoice)
	if err != nil {
		return nil, err
	}
	text, err := c.Template.RenderChat(messages, tools, true, nil)
	if err != nil {
		var raised *chat.RaisedError
		if errors.As(err, &raised) {
			return nil, badRequest("messages: the chat template refuses the conversation: %v", raised)
		}
		return nil, badRequest("messages: rendering the conversation with the chat template: %v", err)
	}
	ids, err := c.Encode(text)
	if err != nil {
		return nil, badRequest("messages: encoding the rendered conversation: %v", err)
	}
	prompt, _ := json.Marshal(ids)
	if ids == nil {
		prompt = []byte("[]")
	}
	// max_completion_tokens is OpenAI's new name of max_tokens.
	maxTokens, field := req.MaxTokens, "max_tokens"
	if len(req.MaxCompletionTokens) > 0 && string(req.MaxCompletionTokens) != "null" {
		maxTokens, field = req.MaxCompletionTokens, "max_completion_tokens"
	}
	if n, given, err := integer(field, maxTokens); err != nil {
		return nil, err
	} else if given && n < 1 {
		return nil, badRequest("%s %d: want at least 1", field, n)
	}
	k, err := chatTopLogprobs(req.Logprobs, req.TopLogprobs)
	if err != nil {
		return nil, err
	}
	rq, err := s.prepare(&completionRequest{
		Model: req.Model, Prompt: prompt, MaxTokens: maxTokens, maxTokensField: field, Temperature: req.Temperature, TopP: req.TopP,
		TopK: req.TopK, Seed: req.Seed, Stream: req.Stream, StreamOptions: req.StreamOptions, Stop: req.Stop, N: req.N, LogitBias: req.LogitBias,
		PresencePenalty: req.PresencePenalty, FrequencyPenalty: req.FrequencyPenalty,
	})
	if err != nil {
		if errors.Is(err, generate.ErrPromptTooLong) {
			err = badRequest("messages: the conversation's %d tokens do not fit the model's context of %d positions", len(ids), s.cfg.Decoder.Context())
		}
		return nil, err
	}
	rq.logprobs = k
	rq.gen.StopTokens = append(slices.Clone(rq.gen.StopTokens), c.StopTokens...)
	return rq, nil
}

// chatTopLogprobs reads logprobs (a bool) and top_logprobs: the most
// likely tokens to list at each position, -1 for no logprobs.
func chatTopLogprobs(rawLogprobs, rawTop json.RawMessage) (int, error) {
	on := false
	if len(rawLogprobs) > 0 && string(rawLogprobs) != "null" {
		if err := json.Unmarshal(rawLogprobs, &on); err != nil {
			return 0, badRequest("logprobs %s: want true or false (top_logprobs says how many likely tokens to list)", truncateJSON(rawLogprobs))
		}
	}
	k, given, err := integer("top_logprobs", rawTop)
	switch {
	case err != nil:
		return 0, err
	case given && (k < 0 || k > MaxTopLogprobs):
		return 0, badRequest("top_logprobs %d: want an integer in [0, %d]", k, MaxTopLogprobs)
	case given && !on:
		return 0, badRequest("top_logprobs needs logprobs true")
	case !on:
		return -1, nil
	}
	return int(k), nil
}

// chatMessages checks the messages and makes them the template's values:
// each an object with a role of chatRoles and a content that is a string,
// an array of text parts (joined with newlines, as the templates of most
// models take text) or, for an assistant turn of tool calls, null.
func chatMessages(raw json.RawMessage) ([]any, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, badRequest("messages is required: an array of {\"role\", \"content\"}")
	}
	if err := checkJSONText("messages", raw); err != nil {
		return nil, err
	}
	v, err := chat.FromJSON(raw)
	if err != nil {
		return nil, badRequest("messages: %v", err)
	}
	list, ok := v.([]any)
	switch {
	case !ok:
		return nil, badRequest("messages: want an array of messages")
	case len(list) == 0:
		return nil, badRequest("messages is empty: want at least one message")
	}
	for i, m := range list {
		d, ok := m.(*chat.Dict)
		if !ok {
			return nil, badRequest("messages[%d]: want an object with \"role\" and \"content\"", i)
		}
		role, ok := d.Get("role")
		if !ok {
			return nil, badRequest("messages[%d].role is required: one of %s", i, strings.Join(chatRoles, ", "))
		}
		if r, ok := role.(string); !ok || !slices.Contains(chatRoles, r) {
			return nil, badRequest("messages[%d].role %s: want one of %s", i, jsonValue(role), strings.Join(chatRoles, ", "))
		}
		content, _ := d.Get("content")
		_, calls := d.Get("tool_calls")
		switch c := content.(type) {
		case string:
		case nil:
			if role != "assistant" || !calls {
				return nil, badRequest("messages[%d].content is required (null only in an assistant message with tool_calls)", i)
			}
		case []any:
			text, err := textParts(i, c)
			if err != nil {
				return nil, err
			}
			d.Set("content", text)
		default:
			return nil, badRequest("messages[%d].content: want a string or an array of text parts", i)
		}
	}
	return list, nil
}

// textParts joins the text of an array of content parts.
func textParts(i int, parts []any) (string, error) {
	var texts []string
	for j, p := range parts {
		d, ok := p.(*chat.Dict)
		if !ok {
			return "", badRequest("messages[%d].content[%d]: want an object {\"type\": \"text\", \"text\": …}", i, j)
		}
		typ, _ := d.Get("type")
		if typ != "text" {
			return "", badRequest("messages[%d].content[%d].type %s: only \"text\" parts are supported", i, j, jsonValue(typ))
		}
		text, ok := d.Get("text")
		s, isString := text.(string)
		if !ok || !isString {
			return "", badRequest("messages[%d].content[%d].text: want a string", i, j)
		}
		texts = append(texts, s)
	}
	return strings.Join(texts, "\n"), nil
}

// jsonValue writes a template value for an error.
func jsonValue(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(v)
	case *chat.Dict:
		return "(an object)"
	case []any:
		return "(an array)"
	}
	return fmt.Sprint(v)
}

// chatTools reads tools, given to the template as its "tools" variable;
// the reply is the model's text, tool calls included, not parsed. A
// tool_choice other than "auto" or "none" (which gives the template no
// tools) asks for what the server cannot do.
func chatTools(rawTools, rawChoice json.RawMessage) (any, error) {
	choice := "auto"
	if len(rawChoice) > 0 && string(rawChoice) != "null" {
		if json.Unmarshal(rawChoice, &choice) != nil || choice != "auto" && choice != "none" {
			return nil, badRequest("tool_choice %s: want \"auto\" or \"none\" (the server cannot make the model call a tool)", truncateJSON(rawChoice))
		}
	}
	if len(rawTools) == 0 || string(rawTools) == "null" || choice == "none" {
		return nil, nil
	}
	if err := checkJSONText("tools", rawTools); err != nil {
		return nil, err
	}
	tools, err := chat.FromJSON(rawTools)
	if err != nil {
		return nil, badRequest("tools: %v", err)
	}
	if _, ok := tools.([]any); !ok {
		return nil, badRequest("tools: want an array of tool definitions")
	}
	return tools, nil
}

// answerChat generates every reply and answers them in one JSON.
func (s *Server) answerChat(w http.ResponseWriter, r *http.Request, rq *request, id string, created int64) {
	jobs, u, ok := s.generateAnswered(w, r, rq)
	if !ok {
		return
	}
	names := s.tokenNames()
	var choices []chatChoice
	for k, j := range jobs {
		finish := j.res.FinishReason
		text := j.res.Text
		c := chatChoice{Index: k, Message: &chatMessage{Role: "assistant", Content: &text}, FinishReason: &finish, Seed: rq.seedOf(j)}
		if rq.logprobs >= 0 {
			c.Logprobs = &chatLogprobs{Content: []chatTokenLogprob{}}
			seq := append(slices.Clone(rq.prompts[0]), j.res.Tokens...)
			for t, lp := range j.res.Logprobs {
				c.Logprobs.Content = append(c.Logprobs.Content, chatLogprob(names, seq[:len(rq.prompts[0])+t], lp, rq.logprobs))
			}
		}
		choices = append(choices, c)
	}
	writeJSON(w, http.StatusOK, chatCompletion{
		ID: id, Object: "chat.completion", Created: created, Model: rq.model,
		Choices: choices, Usage: usageField{u: &u}, Seed: &rq.gen.Sampling.Seed,
	})
}

// streamChat answers with server-sent chat.completion.chunk events
// (eventStream): for each reply a first delta of the role, a delta per
// token of text, a last of the finish reason. An error after the first
// byte ends the stream with an error event.
func (s *Server) streamChat(w http.ResponseWriter, r *http.Request, rq *request, id string, created int64) {
	start := time.Now()
	e := newEventStream[chatChoice](w, rq, id, "chat.completion.chunk", created)
	names := s.tokenNames()
	h := hooks{
		prefilled: func(j *job, _ []generate.TokenLogprobs, _ string) error {
			j.seq = slices.Clone(rq.prompts[0])
			empty := ""
			return e.send(chatChoice{Index: j.sample, Delta: &chatMessage{Role: "assistant", Content: &empty}})
		},
		token: func(j *job, ev generate.Event) error {
			text := ev.Text
			c := chatChoice{Index: j.sample, Delta: &chatMessage{Content: &text}}
			if ev.Token >= 0 {
				if ev.Logprob != nil && rq.logprobs >= 0 {
					c.Logprobs = &chatLogprobs{Content: []chatTokenLogprob{chatLogprob(names, j.seq, *ev.Logprob, rq.logprobs)}}
				}
				j.seq = append(j.seq, ev.Token)
			}
			if text == "" && c.Logprobs == nil {
				return nil // a token that completes no character yet
			}
			return e.send(c)
		},
	}
	e.run(s, r, h, start, func(j *job) chatChoice {
		finish := j.res.FinishReason
		return chatChoice{Index: j.sample, Delta: &chatMessage{}, FinishReason: &finish, Seed: rq.seedOf(j)}
	})
}
