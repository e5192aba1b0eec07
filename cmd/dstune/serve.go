package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/dstune/dstune/internal/sysmem"
	"github.com/dstune/dstune/serve"
	"github.com/dstune/dstune/tokenizer"
	"github.com/dstune/dstune/tokenizer/chat"
)

func init() {
	register(&command{
		name: "serve",
		synopsis: []string{
			"MODEL.onnx --deltas DIR [--addr 127.0.0.1:8080] [--tokenizer T] [--chat-template FILE] [--eos ID ...]",
			" [--kv-cache auto] [--context N] [--threads 1] [--executables N]",
			" [--max-in-flight 256] [--delta-cache SIZE] [--shutdown-timeout 30s] [--api-key KEY] [--cors-origin ORIGIN ...]",
			" [--tls-cert FILE --tls-key FILE]",
		},
		summary: "serve completions of a model and of every delta in a directory over HTTP (JSON, server-sent events)",
		flags:   func(fs *flag.FlagSet) { new(serveFlags).define(fs) },
		run:     runServe,
	})
}

// serveFlags are dstune serve's flags.
type serveFlags struct {
	gf                                generateFlags
	deltaDir, addr, deltaCache        *string
	chatTemplate, apiKey              *string
	tlsCert, tlsKey                   *string
	threads, executables, maxInFlight *int
	eos                               idList
	corsOrigins                       inputFlags
	shutdown                          *time.Duration
}

func (f *serveFlags) define(fs *flag.FlagSet) {
	f.gf.add(fs)
	f.deltaDir = fs.String("deltas", "", "directory of deltas: NAME.safetensors is served as model NAME (loaded on first use, reloaded when the file changes)")
	f.addr = fs.String("addr", "127.0.0.1:8080", "address to listen on, HOST:PORT (:PORT listens on every interface, port 0 picks a free one)")
	f.threads = fs.Int("threads", 1, "goroutines per kernel call (requests run in parallel besides)")
	f.executables = fs.Int("executables", 0, "compiled copies of each graph shape, i.e. requests computing at once (0: the number of cores; at most max(16, 4 × the cores))")
	f.chatTemplate = fs.String("chat-template", "", "chat template of /v1/chat/completions: a Jinja file or a tokenizer_config.json (default: the tokenizer_config.json beside --tokenizer)")
	fs.Var(&f.eos, "eos", "a token id that ends every completion (repeatable)")
	f.maxInFlight = fs.Int("max-in-flight", 256, "requests served at once (at least 1); more are answered 429")
	f.deltaCache = fs.String("delta-cache", "", "memory the loaded deltas may hold, e.g. 2GiB; the least recently used are dropped first (default: the base model's parameters' size, at least 256 MiB)")
	f.shutdown = fs.Duration("shutdown-timeout", 30*time.Second, "on SIGTERM or Ctrl-C, how long in-flight requests may take to finish (0: cut them off at once, as a second signal does)")
	f.apiKey = fs.String("api-key", "", "require this key of every /v1 request, as Authorization: Bearer KEY (default: $DSTUNE_API_KEY, which keeps it out of the process list; none: no key)")
	f.tlsCert = fs.String("tls-cert", "", "serve HTTPS with this PEM certificate (chain), read again when the file changes; needs --tls-key")
	f.tlsKey = fs.String("tls-key", "", "the PEM private key of --tls-cert")
	fs.Var(&f.corsOrigins, "cors-origin", "let pages of this origin, such as http://localhost:3000, call the server from a browser (repeatable; * for any)")
}

func runServe(args []string, stdout, stderr io.Writer) error {
	var f serveFlags
	fs := newFlagSet("serve", f.define)
	deltaDir, addr, threads, executables, maxInFlight, shutdown := f.deltaDir, f.addr, f.threads, f.executables, f.maxInFlight, f.shutdown
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	gf, eos := f.gf, f.eos
	switch {
	case len(pos) != 1:
		return usagef("want exactly one model file, got %d arguments", len(pos))
	case *deltaDir == "":
		return usagef("--deltas DIR is required (an empty directory serves the base model alone)")
	case *threads < 0 || *executables < 0:
		return usagef("--threads and --executables must not be negative")
	case *executables > maxThreads():
		// Each executable holds its own memory.
		return usagef("--executables %d: at most %d on this machine of %d cores (more passes at once than cores only take turns)", *executables, maxThreads(), runtime.NumCPU())
	case *maxInFlight < 1:
		return usagef("--max-in-flight %d: want at least 1 request", *maxInFlight)
	case *shutdown < 0:
		return usagef("--shutdown-timeout %v: want a duration of 0 or more", *shutdown)
	case *addr == "":
		// net.Listen would take it for every interface and a random port.
		return usagef("--addr is empty: want HOST:PORT, such as 127.0.0.1:8080")
	case gf.context < 0:
		return usagef("--context must not be negative (0: the model's limit)")
	}
	if info, err := os.Stat(*deltaDir); err != nil || !info.IsDir() {
		return usagef("--deltas %s: not a directory", *deltaDir)
	}
	set := flagsSet(fs)
	var deltaCache int64
	if set["delta-cache"] {
		if deltaCache, err = sysmem.ParseSize(*f.deltaCache); err != nil || deltaCache <= 0 {
			return usagef("--delta-cache %q: want a positive size such as 2GiB", *f.deltaCache)
		}
	}
	if *f.chatTemplate != "" && gf.tokenizer == "" {
		return usagef("--chat-template needs --tokenizer, which encodes the rendered conversations")
	}
	if !set["api-key"] {
		*f.apiKey = os.Getenv("DSTUNE_API_KEY")
	}
	if key := *f.apiKey; key != strings.TrimSpace(key) || set["api-key"] && key == "" {
		return usagef("--api-key (or DSTUNE_API_KEY) is empty or starts or ends with white space: a client's key could never match it")
	}
	for _, o := range f.corsOrigins {
		if u, err := url.Parse(o); o != "*" && (err != nil || u.Scheme == "" || u.Host == "" || u.Opaque != "" || u.User != nil ||
			u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(o, "/")) {
			return usagef("--cors-origin %q: want an origin as browsers send it, scheme://host[:port] without a path (or *)", o)
		}
	}
	if (*f.tlsCert == "") != (*f.tlsKey == "") {
		return usagef("--tls-cert and --tls-key go together: give the certificate and its private key")
	}
	var certs *certReloader
	if *f.tlsCert != "" {
		if certs, err = newCertReloader(*f.tlsCert, *f.tlsKey, serveLog(stderr).Printf); err != nil {
			return err
		}
	}
	opts := serveOptions{deltaDir: *deltaDir, chatTemplate: *f.chatTemplate, threads: *threads, executables: *executables, eos: eos,
		maxInFlight: *maxInFlight, deltaCache: deltaCache, apiKey: *f.apiKey, corsOrigins: f.corsOrigins}
	srv, closeAll, err := newServer(pos[0], gf, opts, stderr)
	if err != nil {
		return err
	}
	defer closeAll()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	// Ctrl-C and SIGTERM get their default action back before the
	// shutdown begins (SIGINT where it was ignored at start: an exit), so
	// that a second ends the process at once, cutting the requests in
	// flight off (as a second Ctrl-C ends a training run); a second
	// SIGHUP, which a closing terminal sends, does not.
	signals, stopSignals := signal.NotifyContext(context.Background(), interruptSignals...)
	defer stopSignals()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Not when runServe returns without a signal (stopSignals ends
	// signals too): the deferred calls run last first.
	defer context.AfterFunc(signals, func() {
		holdHangups()
		quitOnNextInterrupt() // before SIGINT can be ignored again
		stopSignals()
		cancel()
	})()
	access, scheme := "", "http"
	if *f.apiKey != "" {
		access = " (requests need the API key)"
	}
	var tlsConfig *tls.Config
	if certs != nil {
		scheme, tlsConfig = "https", certs.tlsConfig()
	}
	fmt.Fprintf(stdout, "serving %s and the deltas in %s on %s://%s%s\n", pos[0], *deltaDir, scheme, ln.Addr(), access)
	return serveUntil(ctx, ln, srv, tlsConfig, *shutdown, stderr)
}

// vocabTokenizer tells the server the tokens' vocabulary strings, with
// which logprobs name special tokens ("<s>") and byte tokens ("<0xE4>").
type vocabTokenizer struct{ textTokenizer }

func (t vocabTokenizer) Token(id int) string { return t.t.Token(id) }

// serveOptions are what newServer takes besides the model and the
// generation flags.
type serveOptions struct {
	deltaDir, chatTemplate            string
	threads, executables, maxInFlight int
	eos                               []int64
	deltaCache                        int64
	apiKey                            string
	corsOrigins                       []string
}

// newServer loads the model and tokenizer and makes the server.
func newServer(model string, gf generateFlags, o serveOptions, stderr io.Writer) (*serve.Server, func(), error) {
	m, base, d, err := loadGenerator(model, nil, gf, o.threads, o.executables, true, stderr)
	if err != nil {
		return nil, nil, err
	}
	eos := o.eos
	cfg := serve.Config{Base: base, Decoder: d, DeltaDir: o.deltaDir, StopTokens: eos, MaxInFlight: o.maxInFlight, DeltaCacheBytes: o.deltaCache,
		Log: serveLog(stderr), APIKey: o.apiKey, CORSOrigins: o.corsOrigins}
	if gf.tokenizer != "" {
		tok, err := loadTokenizer(gf.tokenizer)
		if err == nil {
			err = tok.checkFits(gf.tokenizer, d.Vocab(), stderr)
		}
		if err != nil {
			d.Close()
			m.Close()
			return nil, nil, err
		}
		cfg.Tokenizer = vocabTokenizer{tok}
		if len(eos) == 0 {
			if cfg.StopTokens, err = stopTokens(defaultEndTokens(gf.tokenizer, tok.t, stderr), false, d.Vocab(), stderr); err != nil {
				d.Close()
				m.Close()
				return nil, nil, err
			}
		}
		if cfg.Chat, cfg.ChatMissing, err = loadChat(gf.tokenizer, o.chatTemplate, tok.t, d.Vocab(), stderr); err != nil {
			d.Close()
			m.Close()
			return nil, nil, err
		}
	} else {
		cfg.ChatMissing = "start the server with --tokenizer (and --chat-template FILE, or a tokenizer_config.json holding \"chat_template\" beside the tokenizer)"
	}
	// Checked once here: a request cannot change them.
	if cfg.StopTokens, err = stopTokens(cfg.StopTokens, len(eos) > 0, d.Vocab(), stderr); err != nil {
		d.Close()
		m.Close()
		return nil, nil, err
	}
	fmt.Fprintf(stderr, "KV cache: %s; context %d positions\n", d.Note(), d.Context())
	return serve.New(cfg), func() { d.Close(); m.Close() }, nil
}

// serveLog is the server's log: its lines, the HTTP server's and the
// certificate reloader's, go to stderr with a time and the command.
func serveLog(stderr io.Writer) *log.Logger { return log.New(stderr, "dstune serve: ", log.LstdFlags) }

// serveUntil serves on ln (over TLS with tlsConfig, unless nil) until ctx
// ends, then stops accepting and gives the requests in flight up to grace
// to finish.
func serveUntil(ctx context.Context, ln net.Listener, srv *serve.Server, tlsConfig *tls.Config, grace time.Duration, stderr io.Writer) error {
	// No ReadTimeout: on HTTP/1.1 it would cancel a long stream's context
	// once it passed; the server bounds each body's arrival itself.
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: serveLog(stderr)}
	if tlsConfig != nil {
		// HTTP/1.1 only: the listener offers no other protocol, and a
		// non-nil, empty map keeps the server from setting HTTP/2 up.
		hs.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		ln = tls.NewListener(ln, tlsConfig)
	}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	fmt.Fprintf(stderr, "shutting down (requests in flight: %d); Ctrl-C again to quit at once, cutting them off\n", srv.InFlight())
	srv.Stop()
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		hs.Close()
		return fmt.Errorf("requests still running after %v were cut off", grace)
	}
	if serr := <-done; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}

// loadChat finds the chat template of /v1/chat/completions as training
// does (chat.Find: the --chat-template file, else the tokenizer_config.json
// beside the tokenizer) and the tokens that end its assistant turns.
// Without a template, missing says why.
func loadChat(tokPath, file string, tok *tokenizer.Tokenizer, vocab int, stderr io.Writer) (c *serve.Chat, missing string, err error) {
	ct, missing, err := chat.Find(tokPath, file)
	if ct == nil {
		return nil, missing, err
	}
	encode := func(text string) ([]int, error) { return tok.EncodeChecked(text, false) }
	c = &serve.Chat{Template: ct, Encode: encode}
	for _, id := range endOfTurn(ct, tok, encode) {
		if id >= vocab {
			fmt.Fprintf(stderr, "warning: the chat template's end-of-turn token %d (%s) is outside the model's vocabulary [0, %d)\n", id, tok.Token(id), vocab)
			continue
		}
		c.StopTokens = append(c.StopTokens, int64(id))
	}
	if len(c.StopTokens) == 0 {
		fmt.Fprintf(stderr, "warning: the chat template (%s) ends an assistant's turn with no special token of the tokenizer: replies stop only at --eos ids (the tokenizer's end token), a stop string or max_tokens; give --eos with the turn's end token if the model has one\n", ct.Source)
	}
	return c, "", nil
}

// endOfTurn finds the tokens that end an assistant's turn: the
// tokenizer_config.json's eos_token (<|im_end|>, <end_of_turn>), and
// the first special token after a reply in a conversation the template
// renders (Llama 3's <|eot_id|>, whose eos_token is <|end_of_text|>).
func endOfTurn(ct *chat.ChatTemplate, tok *tokenizer.Tokenizer, encode func(string) ([]int, error)) []int {
	var ids []int
	if eos, ok := ct.SpecialTokens["eos_token"]; ok {
		if id, ok := tok.TokenID(eos); ok {
			ids = append(ids, id)
		}
	}
	message := func(role, content string) any {
		d := chat.NewDict()
		d.Set("role", role)
		d.Set("content", content)
		return d
	}
	user := message("user", "Hi")
	prompt, err1 := ct.RenderChat([]any{user}, nil, true, nil)
	whole, err2 := ct.RenderChat([]any{user, message("assistant", "Hello")}, nil, false, nil)
	if err1 != nil || err2 != nil {
		return ids
	}
	p, err1 := encode(prompt)
	w, err2 := encode(whole)
	if err1 != nil || err2 != nil || len(p) > len(w) || !slices.Equal(p, w[:len(p)]) {
		return ids
	}
	for _, id := range w[len(p):] {
		if tok.IsSpecial(id) {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
			break
		}
	}
	return ids
}
