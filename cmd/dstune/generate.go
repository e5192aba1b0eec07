package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/generate"
	"github.com/dstune/dstune/internal/regfile"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/serve"
	"github.com/dstune/dstune/tokenizer"
)

func init() {
	register(&command{
		name: "generate",
		synopsis: []string{
			"MODEL.onnx (--prompt TEXT --tokenizer T | --prompt-ids IDS | --bos ID) [--delta D ...]",
			" [--max-tokens 64] [--temperature 0] [--top-k 0] [--top-p 1] [--seed 0]",
			" [--stop S ...] [--eos ID ...] [--kv-cache auto|past|own|recompute] [--context N] [--threads N]",
		},
		summary: "generate text from a causal language model (greedy or sampled), streaming the tokens",
		flags:   func(fs *flag.FlagSet) { new(generateCmdFlags).define(fs) },
		run:     runGenerate,
	})
}

// generateCmdFlags are dstune generate's flags.
type generateCmdFlags struct {
	gf                generateFlags
	deltas, stops     inputFlags
	prompt            *string
	promptIDs, eos    idList
	bos               *int64
	maxTokens, topK   *int
	temperature, topP *float64
	seed              *uint64
	threads           *int
}

func (f *generateCmdFlags) define(fs *flag.FlagSet) {
	f.gf.add(fs)
	fs.Var(&f.deltas, "delta", "apply this delta.safetensors (or LoRA adapter) in memory first (repeat to compose several, in order)")
	f.prompt = fs.String("prompt", "", "the prompt text (needs --tokenizer)")
	fs.Var(&f.promptIDs, "prompt-ids", "the prompt as token ids: \"1,2,3\" or \"1 2 3\"")
	fs.Var(&f.eos, "eos", "a token id that ends the text (repeatable; default: the tokenizer's end token)")
	f.bos = fs.Int64("bos", -1, "prepend this token id to the prompt (e.g. 1 for Llama's BOS; -1: the tokenizer's template decides)")
	f.maxTokens = fs.Int("max-tokens", 64, "tokens to generate at most")
	f.temperature = fs.Float64("temperature", 0, "sampling temperature; 0 is greedy")
	f.topK = fs.Int("top-k", 0, "sample from the k most likely tokens (0: all)")
	f.topP = fs.Float64("top-p", 1, "sample from the most likely tokens whose probabilities reach p")
	f.seed = fs.Uint64("seed", 0, "seed of the sampling")
	fs.Var(&f.stops, "stop", "end the text before this string (repeatable; needs --tokenizer)")
	f.threads = fs.Int("threads", 0, "goroutines per kernel call (0: all cores)")
}

// idList collects token ids given as "1,2,3" or "1 2 3", repeatable.
type idList []int64

func (l *idList) String() string { return fmt.Sprint([]int64(*l)) }
func (l *idList) Set(s string) error {
	// Ids separated by commas, spaces or both; an empty place between
	// commas ("1,,2") is a typo, not nothing.
	for _, part := range strings.Split(s, ",") {
		fields := strings.Fields(part)
		if len(fields) == 0 && strings.Contains(s, ",") {
			return fmt.Errorf("%q has an empty place between commas", s)
		}
		for _, f := range fields {
			v, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				return fmt.Errorf("token id %q: %w", f, err)
			}
			*l = append(*l, v)
		}
	}
	return nil
}

// generateFlags are the decoding flags generate and serve share.
type generateFlags struct {
	tokenizer string
	kvCache   string
	context   int
}

func (g *generateFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&g.tokenizer, "tokenizer", "", "tokenizer file (Hugging Face tokenizer.json or llama2.c tokenizer.bin)")
	fs.StringVar(&g.kvCache, "kv-cache", "auto", "how earlier positions are reused: auto, past (the model's past_key_values inputs), own (a KV cache dstune keeps), recompute")
	fs.IntVar(&g.context, "context", 0, "most positions a sequence may hold (0: the model's limit, at most 2048 when the graph sets none)")
}

// loadGenerator reads the model, applies the deltas given and prepares
// the decoder. The weights view the file's bytes unless copyWeights: a
// server writes deltas into them again and again, and pays the copy of
// every page once at the start rather than a page fault the first time a
// delta writes each page.
func loadGenerator(path string, deltas []string, gf generateFlags, threads, executables int, copyWeights bool, stderr io.Writer) (*onnx.Model, *serve.Base, *generate.Decoder, error) {
	mode, err := generate.ParseMode(gf.kvCache)
	if err != nil {
		return nil, nil, nil, &usageError{err.Error()}
	}
	m, err := onnx.ReadFile(path)
	if err != nil {
		return nil, nil, nil, err
	}
	newModel := ir.NewModelShared
	if copyWeights {
		newModel = ir.NewModel
	}
	model, err := newModel(m)
	if err != nil {
		m.Close()
		return nil, nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	base, err := serve.NewBase(m, model)
	if err != nil {
		m.Close()
		return nil, nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	inits, err := baseInitializers(m)
	if err != nil {
		m.Close()
		return nil, nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	base.ReadDelta = func(path string) (*dst.Delta, error) { return readDeltaFile(path, inits) }
	if len(deltas) > 0 {
		p, err := base.LoadDeltas(deltas)
		if err != nil {
			m.Close()
			if errors.Is(err, dst.ErrBaseMismatch) {
				// Generating with a delta made for another model (or
				// recording none, as PEFT's adapters) is a decision a
				// user takes once, writing the model: apply --force.
				return nil, nil, nil, fmt.Errorf("%w (to use it anyway, write the model with it: dstune apply %s DELTA... -o OUT.onnx --force, then generate from OUT.onnx)", err, path)
			}
			return nil, nil, nil, err
		}
		p.Apply(nil)
		fmt.Fprintf(stderr, "applied %s: %d entries\n", strings.Join(deltas, ", "), p.Entries)
	}
	d, err := generate.New(model, generate.Options{Mode: mode, Threads: threads, Context: gf.context, Executables: executables})
	if err != nil {
		m.Close()
		return nil, nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, base, d, nil
}

func runGenerate(args []string, stdout, stderr io.Writer) error {
	var f generateCmdFlags
	fs := newFlagSet("generate", f.define)
	gf, prompt, bos, maxTokens, temperature, topK, topP, seed, threads := f.gf, f.prompt, f.bos, f.maxTokens, f.temperature, f.topK, f.topP, f.seed, f.threads
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	gf = f.gf
	deltas, stops, promptIDs, eos := f.deltas, f.stops, f.promptIDs, f.eos
	explicitEOS := len(eos) > 0
	switch {
	case len(pos) != 1:
		return usagef("want exactly one model file, got %d arguments", len(pos))
	case *bos < -1:
		return usagef("--bos %d: want a token id ≥ 0, or -1 (the tokenizer's template decides)", *bos)
	case *prompt == "" && len(promptIDs) == 0 && *bos < 0 && gf.tokenizer == "":
		return usagef("give --prompt TEXT (with --tokenizer) or --prompt-ids IDS")
	case *prompt != "" && len(promptIDs) > 0:
		return usagef("--prompt and --prompt-ids are two ways to give the prompt: give one")
	case *prompt != "" && gf.tokenizer == "":
		return usagef("--prompt needs --tokenizer (or give --prompt-ids)")
	case *maxTokens < 1:
		return usagef("--max-tokens must be at least 1")
	case *threads < 0:
		return usagef("--threads must not be negative")
	case gf.context < 0:
		return usagef("--context must not be negative (0: the model's limit)")
	case slices.Contains(stops, ""):
		return usagef("--stop: an empty string would end the text before it starts")
	case slices.ContainsFunc(stops, func(s string) bool { return !utf8.ValidString(s) }):
		return usagef("--stop: not valid UTF-8: the text is, and a stop string of stray bytes could cut inside a character")
	case *topP == 0:
		return usagef("--top-p 0 keeps no token: want a number in (0, 1] (1 keeps them all)")
	case !(*topP > 0 && *topP <= 1):
		return usagef("--top-p %g: want a number in (0, 1] (1 keeps them all)", *topP)
	case len(stops) > 0 && gf.tokenizer == "":
		return usagef("--stop needs --tokenizer: stop strings end the decoded text (--eos ends it at token ids)")
	}
	sampling := generate.Sampling{Temperature: *temperature, TopK: *topK, TopP: *topP, Seed: *seed}
	if err := sampling.Check(); err != nil {
		return usagef("--%v", err) // "--temperature -1: want …"
	}
	var tok textTokenizer
	if gf.tokenizer != "" {
		if tok, err = loadTokenizer(gf.tokenizer); err != nil {
			return err
		}
		// --bos says which token starts the text; otherwise the
		// tokenizer's own template does (Llama's BOS, nothing for GPT-2).
		tok.addSpecial = *bos < 0
		if len(eos) == 0 {
			eos = defaultEndTokens(gf.tokenizer, tok.t, stderr)
		}
	}
	ids := []int64(promptIDs)
	if gf.tokenizer != "" && *prompt == "" && len(promptIDs) == 0 && *bos < 0 && tok.t.BOS() >= 0 {
		ids = []int64{int64(tok.t.BOS())} // text from the start token alone
	}
	if *prompt != "" {
		enc, err := tok.Encode(*prompt)
		if err != nil {
			return fmt.Errorf("--prompt: %w", err)
		}
		for _, id := range enc {
			ids = append(ids, int64(id))
		}
	}
	if *bos >= 0 {
		ids = append([]int64{*bos}, ids...)
	}

	m, _, d, err := loadGenerator(pos[0], deltas, gf, *threads, 1, false, stderr)
	if err != nil {
		return err
	}
	defer m.Close()
	defer d.Close()
	if gf.tokenizer != "" {
		if err := tok.checkFits(gf.tokenizer, d.Vocab(), stderr); err != nil {
			return err
		}
	}
	if eos, err = stopTokens(eos, explicitEOS, d.Vocab(), stderr); err != nil {
		return err
	}
	// Before anything is printed: a prompt id the model has no row for.
	for _, id := range ids {
		if id < 0 || id >= int64(d.Vocab()) {
			what := "the prompt"
			switch {
			case *bos >= 0 && id == *bos:
				what = "--bos"
			case len(promptIDs) > 0:
				what = "--prompt-ids"
			}
			return usagef("%s: token id %d is outside the model's vocabulary [0, %d)", what, id, d.Vocab())
		}
	}
	fmt.Fprintf(stderr, "KV cache: %s\n", d.Note())

	ctx, stop := signal.NotifyContext(context.Background(), interruptSignals...)
	defer stop()
	req := generate.Request{Prompt: ids, MaxTokens: *maxTokens, Sampling: sampling, Stop: stops, StopTokens: eos}
	first := true
	var text generate.Tokenizer // nil: print token ids
	if gf.tokenizer != "" {
		text = tok
	}
	res, err := generate.Run(ctx, d, text, req, func(ev generate.Event) error {
		switch {
		case text != nil:
			_, err := io.WriteString(stdout, ev.Text)
			return err
		case ev.Token >= 0:
			sep := " "
			if first {
				sep = ""
			}
			first = false
			_, err := fmt.Fprintf(stdout, "%s%d", sep, ev.Token)
			return err
		}
		return nil
	})
	fmt.Fprintln(stdout)
	if err != nil && ctx.Err() != nil {
		// What was generated stays printed; the status says it was cut.
		return &exitError{130, fmt.Sprintf("interrupted after %d of at most %d tokens", len(res.Tokens), *maxTokens)}
	}
	if errors.Is(err, generate.ErrPromptTooLong) || errors.Is(err, generate.ErrBadRequest) {
		// Not an HTTP request here: the message without serve's prefix.
		return usagef("%s", strings.TrimPrefix(err.Error(), generate.ErrBadRequest.Error()+": "))
	}
	if err != nil {
		return err
	}
	perToken := ""
	if n := len(res.Tokens); n > 1 {
		perToken = fmt.Sprintf(", then %.2f ms/token", float64(res.Total-res.FirstToken)/float64(n-1)/1e6)
	}
	fmt.Fprintf(stderr, "%d prompt tokens, %d generated (%s); first token after %.1f ms%s\n",
		res.PromptTokens, len(res.Tokens), res.FinishReason, float64(res.FirstToken)/1e6, perToken)
	return nil
}

// textTokenizer adapts a tokenizer file (Hugging Face tokenizer.json or
// llama2.c tokenizer.bin, see package tokenizer) to generation: Encode
// adds the tokenizer's special tokens (Llama's BOS) unless the caller
// gives its own (--bos), Decode leaves special tokens out.
type textTokenizer struct {
	t          *tokenizer.Tokenizer
	addSpecial bool
}

func (t textTokenizer) Encode(text string) ([]int, error) {
	return t.t.EncodeChecked(text, t.addSpecial)
}
func (t textTokenizer) Decode(ids []int) (string, error) { return t.t.Decode(ids, true), nil }
func (t textTokenizer) IsByteToken(id int) bool          { return t.t.IsByteToken(id) }
func (t textTokenizer) ByteToken(id int) (byte, bool)    { return t.t.ByteToken(id) }

// loadTokenizer reads a tokenizer file (or a model directory holding
// tokenizer.json).
func loadTokenizer(path string) (textTokenizer, error) {
	t, err := tokenizer.Load(path)
	if err != nil {
		return textTokenizer{}, fmt.Errorf("--tokenizer: %w", err)
	}
	return textTokenizer{t: t, addSpecial: true}, nil
}

// defaultEndTokens are the ids that end a text unless --eos is given, as
// transformers' generate ends it: the tokenizer's end token and the
// eos_token_id (one id or a list) of a generation_config.json beside the
// tokenizer (Llama 3 Instruct's ends turns with <|eot_id|>, Qwen 3's with
// <|im_end|> or <|endoftext|>). A generation_config.json that cannot be
// read is named in a warning and left out.
func defaultEndTokens(tokPath string, t *tokenizer.Tokenizer, stderr io.Writer) []int64 {
	var ids []int64
	if t.EOS() >= 0 {
		ids = append(ids, int64(t.EOS()))
	}
	path := tokenizer.Beside(tokPath, "generation_config.json")
	data, err := regfile.ReadFile(path, 1<<20)
	if errors.Is(err, fs.ErrNotExist) {
		return ids
	}
	var cfg struct {
		EOS json.RawMessage `json:"eos_token_id"`
	}
	if err == nil {
		err = json.Unmarshal(data, &cfg)
	}
	var more []int64
	if err == nil && len(cfg.EOS) > 0 && string(cfg.EOS) != "null" {
		var one int64
		if json.Unmarshal(cfg.EOS, &one) == nil {
			more = []int64{one}
		} else if json.Unmarshal(cfg.EOS, &more) != nil {
			err = fmt.Errorf("eos_token_id %s: want a token id or a list of them", cfg.EOS)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "warning: %s: %v (its end tokens are not used)\n", path, err)
		return ids
	}
	for _, id := range more {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// stopTokens checks the end-of-text ids against the model's vocabulary:
// one given by --eos (explicit) outside it is a usage error, since the
// model never gives it; the tokenizer's own end token outside it (a
// special token added past the model's rows) is dropped with a warning.
func stopTokens(ids []int64, explicit bool, vocab int, stderr io.Writer) ([]int64, error) {
	var out []int64
	for _, id := range ids {
		if id >= 0 && id < int64(vocab) {
			out = append(out, id)
			continue
		}
		if explicit {
			return nil, usagef("--eos %d is outside the model's vocabulary [0, %d): the model never gives it", id, vocab)
		}
		fmt.Fprintf(stderr, "warning: the tokenizer's end token %d is outside the model's vocabulary [0, %d): the text ends at --max-tokens or a --stop string\n", id, vocab)
	}
	return out, nil
}

// checkFits refuses a tokenizer with more ids than the model's vocabulary
// (vocab, 0: unknown) and warns of one with far fewer.
func (t textTokenizer) checkFits(path string, vocab int, stderr io.Writer) error {
	warning, err := t.t.FitsModel(vocab)
	if err != nil {
		return fmt.Errorf("--tokenizer %s: %w", path, err)
	}
	if warning != "" {
		fmt.Fprintf(stderr, "warning: --tokenizer %s: %s\n", path, warning)
	}
	return nil
}
