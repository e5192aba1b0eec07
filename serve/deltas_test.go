package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/generate"
)

// greedy is the request the tests below send: four tokens, temperature 0.
func greedy(model string) string {
	return fmt.Sprintf(`{"model":%q,"prompt":[1,5,9],"max_tokens":4,"temperature":0}`, model)
}

var greedyRequest = generate.Request{Prompt: []int64{1, 5, 9}, MaxTokens: 4}

// tokens posts greedy(model) and returns the completion's tokens.
func (f *fixture) tokens(t *testing.T, model string) []int64 {
	t.Helper()
	status, b := f.post(t, greedy(model))
	if status != http.StatusOK {
		t.Fatalf("model %s: status %d %s", model, status, b)
	}
	return decodeCompletion(t, b).Choices[0].Tokens
}

// modelIDs lists the ids GET /v1/models answers.
func (f *fixture) modelIDs(t *testing.T) []string {
	t.Helper()
	resp, err := http.Get(f.http.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range body.Data {
		ids = append(ids, m.ID)
	}
	return ids
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDeltaCacheDropsGoneFiles: deltas whose file was removed do not stay
// loaded: listing the models drops them, and so does loading another
// delta.
func TestDeltaCacheDropsGoneFiles(t *testing.T) {
	f := newFixture(t, 1)
	task0 := filepath.Join(f.dir, "task0"+DeltaExt)
	rotate := func(from, to int) {
		for i := from; i < to; i++ {
			path := filepath.Join(f.dir, fmt.Sprintf("ck%d%s", i, DeltaExt))
			copyFile(t, task0, path)
			f.tokens(t, fmt.Sprintf("ck%d", i))
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}
	}
	rotate(0, 5)
	if ids := f.modelIDs(t); !slices.Equal(ids, []string{BaseName, "task0"}) {
		t.Errorf("models %v, want base and task0", ids)
	}
	if n, bytes := f.srv.deltas.loaded(); n != 0 || bytes != 0 {
		t.Errorf("after removing every delta served and listing the models: %d deltas loaded (%d bytes), want none", n, bytes)
	}

	f.srv.deltas.sweepEvery = 0
	rotate(5, 10)
	f.tokens(t, "task0")
	if n, _ := f.srv.deltas.loaded(); n != 1 {
		t.Errorf("after removing every delta served but task0, and loading task0: %d deltas loaded, want 1", n)
	}
}

// TestDeltaCacheBounded: the loaded deltas stay within maxBytes, the
// least recently used dropped first, though the one just loaded is kept
// even when it alone exceeds the bound; a dropped delta is loaded again
// when asked for, and every request gets its delta's tokens.
func TestDeltaCacheBounded(t *testing.T) {
	f := newFixture(t, 4)
	s := f.srv.deltas
	want := map[string][]int64{}
	for name := range f.deltas {
		want[name] = f.reference(t, name, greedyRequest)
	}
	ask := func(name string) {
		t.Helper()
		if got := f.tokens(t, name); !slices.Equal(got, want[name]) {
			t.Errorf("%s: tokens %v, want %v", name, got, want[name])
		}
	}
	ask("task0")
	_, one := s.loaded()
	s.maxBytes = 2*(one+entryOverhead) + entryOverhead/2 // two deltas fit, three do not
	for _, name := range []string{"task1", "task0", "task2", "task3"} {
		ask(name)
		if n, _ := s.loaded(); n > 2 || s.bytes > s.maxBytes {
			t.Errorf("after %s: %d deltas loaded costing %d bytes, bound %d", name, n, s.bytes, s.maxBytes)
		}
	}
	loaded := func() []string {
		s.mu.Lock()
		defer s.mu.Unlock()
		var names []string
		for el := s.recent.Front(); el != nil; el = el.Next() {
			names = append(names, el.Value.(*deltaEntry).name)
		}
		return names
	}
	if got := loaded(); !slices.Equal(got, []string{"task3", "task2"}) {
		t.Errorf("loaded, most recent first: %v, want task3 task2", got)
	}
	runtime.GC() // nothing holds task1's dropped patch: collected
	before := s.loadCounts()["ok"]
	ask("task1")
	if n := s.loadCounts()["ok"] - before; n != 1 {
		t.Errorf("task1, dropped and collected: %d loads, want 1", n)
	}
	s.maxBytes = 1
	ask("task0")
	if got := loaded(); !slices.Equal(got, []string{"task0"}) {
		t.Errorf("with a bound smaller than any delta: loaded %v, want the last one, task0", got)
	}
}

// TestInFlightDeltaSurvivesDrop: a delta dropped from the cache while a
// request uses it is not spoiled: the request (here a stream, and a lease
// held across a collection) still computes with exactly the delta's
// weights, and a request for the same file meanwhile gets the very patch
// in use rather than a second copy.
func TestInFlightDeltaSurvivesDrop(t *testing.T) {
	f := newFixture(t, 3)
	s := f.srv.deltas
	s.maxBytes = 1 // every load drops every other delta

	held, err := s.get("task0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	streamed := make(chan []int64, 1)
	wg.Add(1)
	go func() { // a long stream of task0 while the others are loaded
		defer wg.Done()
		resp, err := http.Post(f.http.URL+"/v1/completions", "application/json",
			strings.NewReader(`{"model":"task0","prompt":[1,5,9],"max_tokens":40,"temperature":0,"stream":true}`))
		if err != nil {
			t.Error(err)
			return
		}
		defer resp.Body.Close()
		got, err := readTokens(resp, true)
		if err != nil {
			t.Error(err)
		}
		streamed <- got
	}()
	for _, name := range []string{"task1", "task2", "task1"} {
		f.tokens(t, name)
	}
	wg.Wait()
	long := generate.Request{Prompt: greedyRequest.Prompt, MaxTokens: 40}
	if got, want := <-streamed, f.reference(t, "task0", long); !slices.Equal(got, want) {
		t.Errorf("task0 streamed while dropped: %v, want %v", got, want)
	}

	runtime.GC()
	loads := s.loadCounts()["ok"]
	again, err := s.get("task0")
	if err != nil {
		t.Fatal(err)
	}
	if again != held || s.loadCounts()["ok"] != loads {
		t.Errorf("task0 asked for while held: another patch (%v) or another load (%d, %d before)", again != held, s.loadCounts()["ok"], loads)
	}
	f.tokens(t, "task2") // drops task0 again
	runtime.GC()
	gen := generate.Request{Prompt: greedyRequest.Prompt, MaxTokens: 8}
	lease := f.srv.sched.Lease(held)
	gen.Schedule = lease.Run
	res, err := generate.Run(context.Background(), f.srv.cfg.Decoder, nil, gen, func(generate.Event) error { return nil })
	lease.Close()
	if err != nil {
		t.Fatal(err)
	}
	if want := f.reference(t, "task0", generate.Request{Prompt: gen.Prompt, MaxTokens: 8}); !slices.Equal(res.Tokens, want) {
		t.Errorf("task0 through a lease on the dropped patch: %v, want %v", res.Tokens, want)
	}
	if got, want := f.tokens(t, BaseName), f.reference(t, BaseName, greedyRequest); !slices.Equal(got, want) {
		t.Errorf("base model after the dropped patch was restored: %v, want %v", got, want)
	}
}

// TestListingAgreesWithServing: /v1/models lists exactly the deltas that
// are served. base.safetensors is neither (the name is the base model's)
// and is warned about; a symbolic link to a delta, in the directory or
// outside it, is both; a dangling one and a directory are neither, each
// warned about once.
func TestListingAgreesWithServing(t *testing.T) {
	f := newFixture(t, 2)
	var mu sync.Mutex
	var warnings []string
	f.srv.deltas.warn = func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		warnings = append(warnings, fmt.Sprintf(format, args...))
	}
	in := func(name string) string { return filepath.Join(f.dir, name+DeltaExt) }
	elsewhere := filepath.Join(t.TempDir(), "x"+DeltaExt)
	copyFile(t, in("task1"), elsewhere)
	copyFile(t, in("task0"), in(BaseName))
	for link, target := range map[string]string{"alias": "task0" + DeltaExt, "outside": elsewhere, "dangling": "nothing" + DeltaExt} {
		if err := os.Symlink(target, in(link)); err != nil {
			t.Skipf("no symbolic links here: %v", err)
		}
	}
	if err := os.Mkdir(in("folder"), 0o755); err != nil {
		t.Fatal(err)
	}

	for range 2 {
		if ids := f.modelIDs(t); !slices.Equal(ids, []string{BaseName, "alias", "outside", "task0", "task1"}) {
			t.Errorf("models %v, want base alias outside task0 task1", ids)
		}
	}
	if got, want := f.tokens(t, "alias"), f.reference(t, "task0", greedyRequest); !slices.Equal(got, want) {
		t.Errorf("alias → task0: tokens %v, want task0's %v", got, want)
	}
	if got, want := f.tokens(t, BaseName), f.reference(t, BaseName, greedyRequest); !slices.Equal(got, want) {
		t.Errorf("base: tokens %v, want the base model's %v", got, want)
	}
	if got, want := f.tokens(t, "outside"), f.reference(t, "task1", greedyRequest); !slices.Equal(got, want) {
		t.Errorf("outside → a copy of task1: tokens %v, want task1's %v", got, want)
	}
	for _, name := range []string{"dangling", "folder"} {
		status, b := f.post(t, greedy(name))
		if status != http.StatusNotFound {
			t.Errorf("%s: status %d %s, want 404", name, status, b)
		}
	}
	if _, err := f.srv.deltas.get(BaseName); err == nil {
		t.Errorf("get(%q) served base.safetensors", BaseName)
	}

	mu.Lock()
	defer mu.Unlock()
	want := map[string]string{
		BaseName:   "is the base model itself",
		"dangling": "symbolic link that leads to no file",
		"folder":   "not a regular file",
	}
	if len(warnings) != len(want) {
		t.Errorf("%d warnings, want one each for %d files:\n%s", len(warnings), len(want), strings.Join(warnings, "\n"))
	}
	for name, why := range want {
		if !slices.ContainsFunc(warnings, func(w string) bool {
			return strings.Contains(w, name+DeltaExt+" is not served") && strings.Contains(w, why)
		}) {
			t.Errorf("no warning that %s%s is not served because it %s:\n%s", name, DeltaExt, why, strings.Join(warnings, "\n"))
		}
	}
}

// TestDeltaDirThroughLink: a delta directory named through a symbolic
// link serves the links inside it as the directory itself does.
func TestDeltaDirThroughLink(t *testing.T) {
	f := newFixture(t, 1)
	if err := os.Symlink("task0"+DeltaExt, filepath.Join(f.dir, "alias"+DeltaExt)); err != nil {
		t.Skipf("no symbolic links here: %v", err)
	}
	link := filepath.Join(t.TempDir(), "deltas")
	if err := os.Symlink(f.dir, link); err != nil {
		t.Fatal(err)
	}
	s := newDeltaStore(link, f.srv.cfg.Base)
	if _, err := s.get("alias"); err != nil {
		t.Errorf("alias in a directory named through a link: %v", err)
	}
	list, err := s.list()
	if err != nil || len(list) != 2 {
		t.Errorf("listed %+v, %v; want alias and task0", list, err)
	}
}

// TestDeltaReplacedKeepingSizeAndTime: a delta file replaced by a rename
// with another file of the same size and modification time (cp -p, rsync
// -t) is reloaded.
func TestDeltaReplacedKeepingSizeAndTime(t *testing.T) {
	f := newFixture(t, 2)
	path := filepath.Join(f.dir, "task0"+DeltaExt)
	before := f.tokens(t, "task0")
	want := f.tokens(t, "task1")
	if slices.Equal(before, want) {
		t.Fatal("task0 and task1 give the same tokens")
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(f.dir, ".incoming")
	copyFile(t, filepath.Join(f.dir, "task1"+DeltaExt), tmp)
	if err := os.Chtimes(tmp, info.ModTime(), info.ModTime()); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(tmp); err != nil || st.Size() != info.Size() {
		t.Fatalf("task1's file has %d bytes, task0's %d: the test needs equal sizes", st.Size(), info.Size())
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	if got := f.tokens(t, "task0"); !slices.Equal(got, want) {
		t.Errorf("task0 after task1's file replaced it: tokens %v, want task1's %v (task0 gave %v)", got, want, before)
	}
}

// TestDeltaCacheConcurrent: gets of many deltas, listings and removals
// at once keep the store's accounting whole: every entry in the recency
// list and the map alike, its cost summed once, and within the bound.
func TestDeltaCacheConcurrent(t *testing.T) {
	f := newFixture(t, 4)
	s := f.srv.deltas
	s.sweepEvery = 0
	if _, err := s.get("task0"); err != nil {
		t.Fatal(err)
	}
	_, one := s.loaded()
	s.maxBytes = 2 * (one + entryOverhead)
	copyFile(t, filepath.Join(f.dir, "task0"+DeltaExt), filepath.Join(f.dir, "gone"+DeltaExt))
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				switch {
				case g == 0 && i == 10:
					os.Remove(filepath.Join(f.dir, "gone"+DeltaExt))
				case g == 1 && i%5 == 0:
					if _, err := s.list(); err != nil {
						t.Error(err)
					}
				case g == 2:
					s.get("gone") // there or not
				default:
					name := fmt.Sprintf("task%d", (g+i)%4)
					if p, err := s.get(name); err != nil || p == nil {
						t.Errorf("%s: %v", name, err)
					}
				}
			}
		}()
	}
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	var sum int64
	n := 0
	for el := s.recent.Front(); el != nil; el = el.Next() {
		e := el.Value.(*deltaEntry)
		if s.entries[e.name] != e || e.elem != el {
			t.Errorf("%s: in the recency list but not the map", e.name)
		}
		sum += e.cost
		n++
	}
	if n != len(s.entries) || sum != s.bytes || s.bytes > s.maxBytes {
		t.Errorf("%d entries listed, %d mapped; costs sum to %d, counted %d, bound %d", n, len(s.entries), sum, s.bytes, s.maxBytes)
	}
}

// TestConfigDeltaCacheAndLog: Config.DeltaCacheBytes bounds the loaded
// deltas, and the directory's warnings reach Config.Log.
func TestConfigDeltaCacheAndLog(t *testing.T) {
	f := newFixture(t, 1)
	var buf bytes.Buffer
	s := New(Config{Base: f.srv.cfg.Base, Decoder: f.srv.cfg.Decoder, DeltaDir: f.dir, DeltaCacheBytes: 12345, Log: log.New(&buf, "", 0)})
	if s.deltas.maxBytes != 12345 {
		t.Errorf("maxBytes %d, want 12345", s.deltas.maxBytes)
	}
	copyFile(t, filepath.Join(f.dir, "task0"+DeltaExt), filepath.Join(f.dir, BaseName+DeltaExt))
	if _, err := s.deltas.list(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), BaseName+DeltaExt+" is not served") {
		t.Errorf("log: %q", buf.String())
	}
	if d := New(Config{Base: f.srv.cfg.Base, Decoder: f.srv.cfg.Decoder, DeltaDir: f.dir}); d.deltas.maxBytes != defaultDeltaCacheBytes(f.srv.cfg.Base) {
		t.Errorf("default maxBytes %d", d.deltas.maxBytes)
	}
}

// TestDeltaKeptWhileLoading: a delta being loaded is not dropped to make
// room for another (with no room at all here), so the requests for it
// share the one copy it loads instead of loading it again.
func TestDeltaKeptWhileLoading(t *testing.T) {
	f := newFixture(t, 2)
	s := f.srv.deltas
	s.maxBytes = 1
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	read := s.base.ReadDelta
	s.base.ReadDelta = func(path string) (*dst.Delta, error) {
		if filepath.Base(path) == "task0"+DeltaExt {
			once.Do(func() { close(started); <-release })
		}
		if read != nil {
			return read(path)
		}
		return dst.ReadDelta(path)
	}
	first := make(chan *Patch)
	go func() {
		p, err := s.get("task0")
		if err != nil {
			t.Error(err)
		}
		first <- p
	}()
	<-started
	if _, err := s.get("task1"); err != nil { // no room: the others go
		t.Fatal(err)
	}
	close(release)
	p1 := <-first
	p2, err := s.get("task0")
	if err != nil {
		t.Fatal(err)
	}
	if p1 == nil || p1 != p2 || s.loadCounts()["ok"] != 2 {
		t.Errorf("task0 loaded again (same patch %v, %d loads): it was dropped while it loaded", p1 == p2, s.loadCounts()["ok"])
	}
}

// TestMetricsModelsBounded: past maxModelSeries models, requests are
// counted together under "(other)", so names that come and go do not
// grow the metrics without end.
func TestMetricsModelsBounded(t *testing.T) {
	defer func(was int) { maxModelSeries = was }(maxModelSeries)
	maxModelSeries = 3
	m := metrics{byModel: map[string]*modelCounters{}}
	for i := range 10 {
		m.request(fmt.Sprintf("m%d", i), http.StatusOK)
	}
	m.request("m1", http.StatusOK)
	if len(m.byModel) != 4 || m.byModel[otherModels].byStatus[http.StatusOK] != 7 || m.byModel["m1"].byStatus[http.StatusOK] != 2 {
		t.Errorf("%d series, (other) %v, m1 %v", len(m.byModel), m.byModel[otherModels], m.byModel["m1"])
	}
}

// TestMetricsLabelsAndCodes: a label value is escaped as Prometheus reads
// it (a tab stays, \t would fail the scrape); a request whose client went
// away counts as 499, not a server error; a failed request naming no
// model the server has counts as "(unknown)", not under the client's name.
func TestMetricsLabelsAndCodes(t *testing.T) {
	if got, want := promLabel("a\tb\"c\\d\ne"), `a`+"\t"+`b\"c\\d\ne`; got != want {
		t.Errorf("promLabel = %q, want %q", got, want)
	}
	if he := classify(fmt.Errorf("generating: %w", context.Canceled)); he.status != 499 {
		t.Errorf("a canceled request: %d", he.status)
	}
	f := newFixture(t, 1)
	before := f.srv.metrics.byModel[unknownModel]
	n := int64(0)
	if before != nil {
		n = before.byStatus[http.StatusBadRequest]
	}
	if status, _ := f.post(t, `{"model":"nosuchdelta","prompt":[1],"max_tokens":0}`); status != http.StatusBadRequest {
		t.Fatalf("status %d", status)
	}
	if f.srv.metrics.byModel["nosuchdelta"] != nil || f.srv.metrics.byModel[unknownModel].byStatus[http.StatusBadRequest] != n+1 {
		t.Errorf("a bad request for a model nobody has is counted under its name")
	}
}

// TestPromptFillingTheContext: a prompt as long as the context still
// gets one token (predicted from its last position); one longer is
// refused.
func TestPromptFillingTheContext(t *testing.T) {
	f := newFixture(t, 0)
	full := strings.TrimSuffix(strings.Repeat("1,", 64), ",")
	status, b := f.post(t, `{"model":"base","prompt":[`+full+`],"max_tokens":1,"temperature":0}`)
	if status != http.StatusOK || len(decodeCompletion(t, b).Choices[0].Tokens) != 1 {
		t.Errorf("a prompt of the context's 64 tokens: %d %s", status, b)
	}
	if status, b := f.post(t, `{"model":"base","prompt":[`+full+`,1],"max_tokens":1}`); status != http.StatusBadRequest {
		t.Errorf("a prompt of 65 tokens: %d %s", status, b)
	}
}

// TestErrorsHideTheDirectory: an error about a delta names its file as
// the directory lists it, not where the server keeps it (the log has the
// whole path).
func TestErrorsHideTheDirectory(t *testing.T) {
	f := newFixture(t, 0)
	if err := os.WriteFile(filepath.Join(f.dir, "garbage"+DeltaExt), []byte("not a delta"), 0o644); err != nil {
		t.Fatal(err)
	}
	status, b := f.post(t, `{"model":"garbage","prompt":[1]}`)
	if status != http.StatusUnprocessableEntity || strings.Contains(string(b), f.dir) || !strings.Contains(string(b), "garbage"+DeltaExt) {
		t.Errorf("status %d: %s", status, b)
	}
}
