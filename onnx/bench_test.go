package onnx

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// syntheticModel writes a GPT-like model of about mb megabytes: per layer
// four float32 matrices and their biases, chained by MatMul/Add, plus an
// embedding table; the weights are a cheap deterministic pattern.
func syntheticModel(tb testing.TB, path string, mb int) {
	tb.Helper()
	const d = 1024 // 4 MiB per d×d float32 matrix
	layers := max(1, mb*(1<<20)/(4*d*d*4))
	g := &Graph{Name: "synthetic"}
	g.Inputs = []*ValueInfo{{Name: "x", Type: &Type{Kind: TypeTensor, ElemType: Float, HasShape: true, Shape: []Dim{{Param: "batch"}, {Value: d, HasValue: true}}}}}
	prev := "x"
	pattern := make([]byte, 4*d*d)
	for i := range pattern {
		pattern[i] = byte(i*7 + i>>12)
	}
	for l := 0; l < layers; l++ {
		for j := 0; j < 4; j++ {
			w := fmt.Sprintf("h.%d.w%d.weight", l, j)
			bias := fmt.Sprintf("h.%d.w%d.bias", l, j)
			raw := append([]byte(nil), pattern...)
			raw[0], raw[1] = byte(l), byte(j) // distinct tensors
			g.Initializers = append(g.Initializers,
				&Tensor{Name: w, DataType: Float, Dims: []int64{d, d}, Raw: raw, RawOffset: -1},
				&Tensor{Name: bias, DataType: Float, Dims: []int64{d}, Raw: pattern[:4*d], RawOffset: -1})
			mm, add := fmt.Sprintf("h.%d.mm%d", l, j), fmt.Sprintf("h.%d.add%d", l, j)
			g.Nodes = append(g.Nodes,
				&Node{Name: mm, OpType: "MatMul", Inputs: []string{prev, w}, Outputs: []string{mm}},
				&Node{Name: add, OpType: "Add", Inputs: []string{mm, bias}, Outputs: []string{add}})
			prev = add
		}
	}
	g.Outputs = []*ValueInfo{{Name: prev, Type: &Type{Kind: TypeTensor, ElemType: Float}}}
	m := &Model{IRVersion: 8, OpsetImports: []OpsetID{{Version: 17}}, ProducerName: "dstune benchmark", Graph: g}
	if err := WriteFile(path, m, WriteOptions{ExternalData: ExternalNever}); err != nil {
		tb.Fatal(err)
	}
}

var (
	benchModelOnce sync.Once
	benchModelPath string
	benchModelDir  string
)

// benchModel returns the path of the synthetic model, generated once per
// test binary run in a temporary directory that TestMain removes.
func benchModel(b *testing.B) string {
	benchModelOnce.Do(func() {
		mb := 600
		if s := os.Getenv("DSTUNE_BENCH_MODEL_MB"); s != "" {
			if v, err := strconv.Atoi(s); err == nil && v > 0 {
				mb = v
			}
		}
		dir, err := os.MkdirTemp("", "dstune-onnx-bench")
		if err != nil {
			b.Fatal(err)
		}
		benchModelDir = dir
		benchModelPath = filepath.Join(dir, "synthetic.onnx")
		syntheticModel(b, benchModelPath, mb)
	})
	return benchModelPath
}

// BenchmarkReadFile loads the synthetic model (warm page cache):
//
//	mode=mmap        ReadFile (mapped, nothing touched) + Close
//	mode=mmap-touch  the same, then one byte of every 4 KiB page of every initializer
//	mode=read        ReadFile with mapping off: the whole file read into memory
//
// and reports the peak RSS (VmHWM) of a child process doing the same, as
// MB and as a multiple of the file size.
func BenchmarkReadFile(b *testing.B) {
	path := benchModel(b)
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"mmap", "mmap-touch", "read"} {
		b.Run("mode="+mode, func(b *testing.B) {
			b.SetBytes(st.Size())
			b.ReportAllocs()
			for b.Loop() {
				if err := loadForBenchmark(path, mode); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			rss, err := childPeakRSS(path, mode)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(rss)/1e6, "peak-RSS-MB")
			b.ReportMetric(float64(rss)/float64(st.Size()), "RSS/file")
		})
	}
}

// TestMain removes the benchmark's synthetic model after all runs.
func TestMain(m *testing.M) {
	code := m.Run()
	if benchModelDir != "" {
		os.RemoveAll(benchModelDir)
	}
	os.Exit(code)
}

// loadForBenchmark loads the model at path the way mode says.
func loadForBenchmark(path, mode string) error {
	if mode == "read" {
		defer setMmapThreshold(1 << 62)()
	}
	m, err := ReadFile(path)
	if err != nil {
		return err
	}
	if mode == "mmap-touch" {
		var sum byte
		for _, t := range m.Graph.Initializers {
			for i := 0; i < len(t.Raw); i += 4096 {
				sum += t.Raw[i]
			}
		}
		benchSink = sum
	}
	return m.Close()
}

var benchSink byte

// childPeakRSS runs this test binary again as a child that only loads the
// model, and returns the child's VmHWM in bytes.
func childPeakRSS(path, mode string) (int64, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestPeakRSSChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "DSTUNE_RSS_CHILD_MODEL="+path, "DSTUNE_RSS_CHILD_MODE="+mode)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("child: %v\n%s", err, out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM-bytes "); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("child printed no VmHWM:\n%s", out)
}

// TestPeakRSSChild is the child of childPeakRSS; it does nothing in a
// normal test run.
func TestPeakRSSChild(t *testing.T) {
	path := os.Getenv("DSTUNE_RSS_CHILD_MODEL")
	if path == "" {
		t.Skip("only runs as the child process of BenchmarkReadFile")
	}
	if err := loadForBenchmark(path, os.Getenv("DSTUNE_RSS_CHILD_MODE")); err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Printf("VmHWM-bytes %d\n", kb*1024)
			return
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
}
