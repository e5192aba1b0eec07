// Command measure times serving deltas: the latency a request pays for
// its delta at ε from 10⁻⁵ to 10⁻¹ (first token and per token, with the
// delta switched once per request and before every forward pass), the
// memory each loaded delta holds, and the throughput of the HTTP server
// under 1, 8 and 64 concurrent clients on loopback, checking every
// response against the tokens its delta alone gives.
//
//	go run ./serve/experiments/measure [-model M.onnx | -llama DIM,LAYERS,VOCAB] [-threads 1]
//
// The model is stories260K from the shared test data by default; -llama
// generates a Llama-shaped decoder with random weights instead. Output is
// markdown tables.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/generate"
	"github.com/dstune/dstune/internal/deltagen"
	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/serve"
)

func main() {
	modelPath := flag.String("model", "../shared/testdata/models/stories260K/stories260K.onnx", "the base model")
	llama := flag.String("llama", "", "instead of -model, a Llama-shaped decoder with random weights: DIM,LAYERS,VOCAB")
	threads := flag.Int("threads", 1, "goroutines per kernel call")
	executables := flag.Int("executables", 0, "forward passes running at once (0: GOMAXPROCS)")
	prompt := flag.Int("prompt", 16, "prompt tokens of a request")
	tokens := flag.Int("tokens", 32, "tokens a request generates")
	repeats := flag.Int("repeats", 5, "requests per measurement (the fastest is reported)")
	epsList := flag.String("eps", "1e-5,1e-4,1e-3,1e-2,1e-1", "ε of the deltas whose overhead is measured")
	clients := flag.String("clients", "1,8,64", "concurrent clients of the load test")
	deltas := flag.Int("deltas", 8, "distinct deltas (ε = 1e-3) the load test's clients use, besides the base model")
	duration := flag.Duration("duration", 10*time.Second, "how long each load level runs")
	maxRequests := flag.Int("max-requests", 2000, "requests per load level at most")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "measure:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := run(*modelPath, *llama, *threads, *executables, *prompt, *tokens, *repeats, *epsList, *clients, *deltas, *duration, *maxRequests); err != nil {
		fmt.Fprintln(os.Stderr, "measure:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(modelPath, llama string, threads, executables, promptLen, tokens, repeats int, epsList, clientList string, nDeltas int, duration time.Duration, maxRequests int) error {
	dir, err := os.MkdirTemp("", "dstune-measure")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if llama != "" {
		var c llamagen.Config
		if _, err := fmt.Sscanf(llama, "%d,%d,%d", &c.Dim, &c.Layers, &c.Vocab); err != nil {
			return fmt.Errorf("-llama %q: want DIM,LAYERS,VOCAB", llama)
		}
		c.Heads, c.KVHeads, c.Hidden, c.Seed = max(1, c.Dim/64), max(1, c.Dim/128), c.Dim*8/3, 1
		if err := llamagen.Write(dir, c); err != nil {
			return err
		}
		modelPath = filepath.Join(dir, "model.onnx")
		fmt.Printf("model: Llama-shaped decoder, width %d, %d layers, vocab %d, %d heads (%d key/value), %d parameters\n",
			c.Dim, c.Layers, c.Vocab, c.Heads, c.KVHeads, c.Params())
	} else {
		fmt.Printf("model: %s\n", modelPath)
	}
	m, err := onnx.ReadFile(modelPath)
	if err != nil {
		return err
	}
	defer m.Close()
	// As dstune serve does: the weights read into memory.
	model, err := ir.NewModel(m)
	if err != nil {
		return err
	}
	base, err := serve.NewBase(m, model)
	if err != nil {
		return err
	}
	dec, err := generate.New(model, generate.Options{Threads: threads, Executables: executables})
	if err != nil {
		return err
	}
	defer dec.Close()
	fmt.Printf("decoder: %s; context %d; GOMAXPROCS %d, %d thread(s) per kernel, %d pass(es) at once\n\n", dec.Note(), dec.Context(), runtime.GOMAXPROCS(0), threads, cmp.Or(executables, runtime.GOMAXPROCS(0)))
	prompt := make([]int64, promptLen)
	for i := range prompt {
		prompt[i] = int64(1 + i*7%(dec.Vocab()-1))
	}
	if epsList != "" {
		if err := overhead(m, base, dec, dir, prompt, tokens, repeats, epsList); err != nil {
			return err
		}
	}
	if clientList == "" {
		return nil
	}
	return load(m, base, dec, dir, prompt, tokens, nDeltas, clientList, duration, maxRequests)
}

// ---------------------------------------------------------------- overhead

type timing struct{ first, perToken, total time.Duration }

// request runs one generation with schedule and returns its timing.
func request(dec *generate.Decoder, prompt []int64, tokens int, schedule func(context.Context, func() error) error) (timing, error) {
	res, err := generate.Run(context.Background(), dec, nil, generate.Request{Prompt: prompt, MaxTokens: tokens, Schedule: schedule},
		func(generate.Event) error { return nil })
	if err != nil {
		return timing{}, err
	}
	if len(res.Tokens) != tokens {
		return timing{}, fmt.Errorf("generated %d tokens, want %d", len(res.Tokens), tokens)
	}
	return timing{res.FirstToken, (res.Total - res.FirstToken) / time.Duration(tokens-1), res.Total}, nil
}

func fastest(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[0]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/1e6) }

// share is part over whole in percent.
func share(part, whole time.Duration) string {
	return fmt.Sprintf("+%.2f %%", 100*float64(part)/float64(whole))
}

func pct(d, base time.Duration) string {
	return fmt.Sprintf("%+.1f %%", 100*(float64(d)-float64(base))/float64(base))
}

// overhead measures, for deltas at each ε, the switch cost and the
// latency of requests with the delta against requests of the base model,
// interleaved so that drift in the machine's load hits both alike.
func overhead(m *onnx.Model, base *serve.Base, dec *generate.Decoder, dir string, prompt []int64, tokens, repeats int, epsList string) error {
	var sched serve.Scheduler
	run := func(p *serve.Patch, everyPass bool) (timing, error) {
		return request(dec, prompt, tokens, func(ctx context.Context, step func() error) error {
			if everyPass {
				// Another delta ran in between: the weights go back to
				// the base and the delta is written again, the work of a
				// switch between two deltas of this size.
				if err := sched.Run(ctx, nil, func() error { return nil }); err != nil {
					return err
				}
			}
			return sched.Run(ctx, p, step)
		})
	}
	// Every delta is made before any is applied: the shared weights must
	// be the base's when a delta records their hash.
	var epsValues []float64
	var paths []string
	for _, f := range strings.Split(epsList, ",") {
		eps, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return fmt.Errorf("-eps %q: %w", f, err)
		}
		d, err := deltagen.Random(m, eps, 0.01, 7)
		if err != nil {
			return err
		}
		path := filepath.Join(dir, fmt.Sprintf("eps%g%s", eps, serve.DeltaExt))
		if err := dst.WriteDelta(path, d); err != nil {
			return err
		}
		epsValues, paths = append(epsValues, eps), append(paths, path)
	}
	// The base model's weights are back in place at the end.
	defer sched.Run(context.Background(), nil, func() error { return nil })
	// Warm up: compile every shape.
	if _, err := run(nil, false); err != nil {
		return err
	}
	var perRequest, everyPass []string
	for i, eps := range epsValues {
		path := paths[i]
		info, err := os.Stat(path)
		if err != nil {
			return err
		}
		p, err := base.LoadDeltas([]string{path})
		if err != nil {
			return err
		}
		// The switch: restore one delta, write another.
		const switches = 200
		start := time.Now()
		for i := range switches {
			q := p
			if i%2 == 1 {
				q = nil
			}
			sched.Run(context.Background(), q, func() error { return nil })
		}
		switchCost := time.Since(start) / switches
		var bFirst, bTok, bTotal, rFirst, rTotal, eTok []time.Duration
		for range repeats {
			// The base model's weights are in place before the base
			// request, so it pays no switch.
			sched.Run(context.Background(), nil, func() error { return nil })
			b, err := run(nil, false)
			if err != nil {
				return err
			}
			r, err := run(p, false)
			if err != nil {
				return err
			}
			e, err := run(p, true)
			if err != nil {
				return err
			}
			bFirst, bTok, bTotal = append(bFirst, b.first), append(bTok, b.perToken), append(bTotal, b.total)
			rFirst, rTotal, eTok = append(rFirst, r.first), append(rTotal, r.total), append(eTok, e.perToken)
		}
		perRequest = append(perRequest, fmt.Sprintf("| %g | %d | %d | %d | %.1f | %s → %s (%s; est. %s) | %s → %s (%s; est. %s) |",
			eps, p.Entries, info.Size(), p.Bytes(), float64(switchCost)/1e3,
			ms(fastest(bFirst)), ms(fastest(rFirst)), pct(fastest(rFirst), fastest(bFirst)), share(switchCost, fastest(bFirst)),
			ms(fastest(bTotal)), ms(fastest(rTotal)), pct(fastest(rTotal), fastest(bTotal)), share(switchCost, fastest(bTotal))))
		everyPass = append(everyPass, fmt.Sprintf("| %g | %.1f | %s → %s (%s; est. %s) |",
			eps, float64(switchCost)/1e3, ms(fastest(bTok)), ms(fastest(eTok)), pct(fastest(eTok), fastest(bTok)), share(switchCost, fastest(bTok))))
	}
	fmt.Printf("## A delta's latency vs ε (%d prompt tokens, %d generated; the fastest of %d requests of each kind, interleaved, as this machine is shared)\n\n", len(prompt), tokens, repeats)
	fmt.Println("Per request: the delta is written into the weights before the request's first forward pass")
	fmt.Println("(a client alone, or the requests of one delta). base → with the delta, the difference measured,")
	fmt.Println("and est.: the switch's own time (restore one delta, write another) over the base's latency.")
	fmt.Println()
	fmt.Println("| ε | entries | file bytes | held bytes | switch µs | first token ms | whole request ms |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	for _, row := range perRequest {
		fmt.Println(row)
	}
	fmt.Println()
	fmt.Println("Every pass: the weights go back to the base and the delta is written again before every forward")
	fmt.Println("pass, the most interleaving with other deltas' requests could cost. (The server's leases keep a")
	fmt.Printf("delta for %d× the switch's time, %v at least, so it pays at most 1/%d of this.)\n", serve.YieldFactor, serve.MinHold, serve.YieldFactor)
	fmt.Println()
	fmt.Println("| ε | switch µs | per token ms |")
	fmt.Println("|---|---:|---:|")
	for _, row := range everyPass {
		fmt.Println(row)
	}
	fmt.Println()
	return nil
}

// ---------------------------------------------------------------- load

// seeds is how many seeds the load test's requests use per model.
const seeds = 4

// job is what one request asks for: a model (the base or a delta) and a
// seed; want is the tokens that model alone gives.
type job struct {
	model string
	seed  uint64
}

func load(m *onnx.Model, base *serve.Base, dec *generate.Decoder, dir string, prompt []int64, tokens, nDeltas int, clientList string, duration time.Duration, maxRequests int) error {
	deltaDir := filepath.Join(dir, "deltas")
	if err := os.Mkdir(deltaDir, 0o755); err != nil {
		return err
	}
	models := []string{serve.BaseName}
	var fileBytes int64
	for i := range nDeltas {
		d, err := deltagen.Random(m, 1e-3, 0.5, uint64(100+i))
		if err != nil {
			return err
		}
		name := fmt.Sprintf("task%d", i)
		path := filepath.Join(deltaDir, name+serve.DeltaExt)
		if err := dst.WriteDelta(path, d); err != nil {
			return err
		}
		info, _ := os.Stat(path)
		fileBytes += info.Size()
		models = append(models, name)
	}
	// The tokens each model gives alone, with the delta applied for good
	// to a separate copy of the model.
	want := map[job][]int64{}
	for _, name := range models {
		ref, err := referenceDecoder(m, name, deltaDir)
		if err != nil {
			return err
		}
		for seed := range uint64(seeds) {
			res, err := generate.Run(context.Background(), ref, nil, generate.Request{Prompt: prompt, MaxTokens: tokens,
				Sampling: generate.Sampling{Temperature: 1, Seed: seed}}, func(generate.Event) error { return nil })
			if err != nil {
				return err
			}
			want[job{name, seed}] = res.Tokens
		}
		ref.Close()
	}
	distinct := map[string]bool{}
	for _, w := range want {
		distinct[fmt.Sprint(w)] = true
	}

	var memBefore runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&memBefore)
	srv := serve.New(serve.Config{Base: base, Decoder: dec, DeltaDir: deltaDir, MaxInFlight: 1024})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.Handler()}
	go hs.Serve(ln)
	defer hs.Close()
	url := "http://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}, Timeout: 5 * time.Minute}

	body := func(j job) string {
		ids := make([]string, len(prompt))
		for i, t := range prompt {
			ids[i] = fmt.Sprint(t)
		}
		return fmt.Sprintf(`{"model":%q,"prompt":[%s],"max_tokens":%d,"temperature":1,"seed":%d}`, j.model, strings.Join(ids, ","), tokens, j.seed)
	}
	// Load every delta once.
	for _, name := range models {
		if _, err := post(client, url, body(job{name, 0})); err != nil {
			return err
		}
	}
	var memAfter runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&memAfter)
	heldTotal := int64(0)
	for _, name := range models[1:] {
		p, err := base.LoadDeltas([]string{filepath.Join(deltaDir, name+serve.DeltaExt)})
		if err != nil {
			return err
		}
		heldTotal += p.Bytes()
	}

	fmt.Printf("## Throughput on loopback (%d prompt tokens, %d generated, sampled; clients send requests back to back, to the base alone or cycling over the base and %d deltas at ε = 1e-3; each level runs %v or %d requests per mix, in rounds alternating the mixes; tokens/s of the median round)\n\n",
		len(prompt), tokens, nDeltas, duration, maxRequests)
	fmt.Printf("memory: %d delta files of %d bytes in all; the patches hold %d bytes; the Go heap grew by %d bytes loading them (with the server's own state)\n",
		nDeltas, fileBytes, heldTotal, int64(memAfter.HeapAlloc)-int64(memBefore.HeapAlloc))
	fmt.Printf("references: %d distinct token sequences among %d (model, seed) pairs\n\n", len(distinct), len(want))
	fmt.Println("| clients | models | requests | errors | wrong tokens | tokens/s | requests/s | latency p50 ms | p95 ms | delta switches |")
	fmt.Println("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	var levels []int
	for _, f := range strings.Split(clientList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("-clients %q", f)
		}
		levels = append(levels, n)
	}
	// Each level runs in rounds alternating the two mixes, after a round
	// that compiles the shapes it needs; tokens/s is the median round's.
	const rounds = 3
	mixes := [][]string{models[:1], models}
	for _, level := range levels {
		loadRound(client, url, level, models, body, want, tokens, duration/rounds/2, maxRequests/rounds)
		var results [2][]roundResult
		for range rounds {
			for i, mix := range mixes {
				results[i] = append(results[i], loadRound(client, url, level, mix, body, want, tokens, duration/rounds, maxRequests/rounds))
			}
		}
		for i, mix := range mixes {
			name := "base"
			if len(mix) > 1 {
				name = fmt.Sprintf("base + %d deltas", len(mix)-1)
			}
			var sum roundResult
			var rates []float64
			for _, r := range results[i] {
				sum.done += r.done
				sum.failed += r.failed
				sum.wrong += r.wrong
				sum.switches += r.switches
				sum.latencies = append(sum.latencies, r.latencies...)
				rates = append(rates, float64(r.done)/r.elapsed.Seconds())
			}
			slices.Sort(rates)
			slices.Sort(sum.latencies)
			p := func(q float64) time.Duration {
				if len(sum.latencies) == 0 {
					return 0
				}
				return sum.latencies[min(len(sum.latencies)-1, int(math.Ceil(q*float64(len(sum.latencies))))-1)]
			}
			rate := rates[len(rates)/2]
			fmt.Printf("| %d | %s | %d | %d | %d | %.0f | %.2f | %s | %s | %d |\n", level, name, sum.done, sum.failed, sum.wrong,
				rate*float64(tokens), rate, ms(p(0.5)), ms(p(0.95)), sum.switches)
		}
	}
	fmt.Println()
	return nil
}

// roundResult is what one round of a load level measured.
type roundResult struct {
	done, failed, wrong, switches int64
	elapsed                       time.Duration
	latencies                     []time.Duration
}

// loadRound runs n clients cycling over models for duration (or
// maxRequests requests), checking every response's tokens.
func loadRound(client *http.Client, url string, n int, models []string, body func(job) string, want map[job][]int64, tokens int, duration time.Duration, maxRequests int) roundResult {
	switchesBefore := scrape(client, url, "dstune_delta_switches_total")
	var done, failed, wrong, next atomic.Int64
	var mu sync.Mutex
	var latencies []time.Duration
	deadline := time.Now().Add(duration)
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				k := next.Add(1)
				if k > int64(maxRequests) {
					return
				}
				j := job{models[int(k)%len(models)], uint64(k/int64(len(models))) % seeds}
				t0 := time.Now()
				got, err := post(client, url, body(j))
				lat := time.Since(t0)
				switch {
				case err != nil:
					failed.Add(1)
				case !slices.Equal(got, want[j]):
					wrong.Add(1)
				}
				done.Add(1)
				mu.Lock()
				latencies = append(latencies, lat)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return roundResult{done: done.Load(), failed: failed.Load(), wrong: wrong.Load(), elapsed: time.Since(start),
		switches: scrape(client, url, "dstune_delta_switches_total") - switchesBefore, latencies: latencies}
}

// referenceDecoder loads a separate copy of the model with the named
// delta applied for good.
func referenceDecoder(m *onnx.Model, name, deltaDir string) (*generate.Decoder, error) {
	model, err := ir.NewModel(m)
	if err != nil {
		return nil, err
	}
	if name != serve.BaseName {
		b, err := serve.NewBase(m, model)
		if err != nil {
			return nil, err
		}
		p, err := b.LoadDeltas([]string{filepath.Join(deltaDir, name+serve.DeltaExt)})
		if err != nil {
			return nil, err
		}
		p.Apply(nil)
	}
	return generate.New(model, generate.Options{Threads: 1})
}

func post(client *http.Client, url, body string) ([]int64, error) {
	resp, err := client.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
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

// scrape reads one unlabelled counter from /metrics.
func scrape(client *http.Client, url, name string) int64 {
	resp, err := client.Get(url + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}
