package cpu

import (
	"fmt"
	"github.com/dstune/dstune/internal/sharedtest/models"
	"os"
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
)

// matmulFLOPs counts 2·M·N·K per product over the graph's MatMul and Gemm
// nodes: the work a forward pass cannot avoid.
func matmulFLOPs(g *ir.Graph) float64 {
	var f float64
	for _, n := range g.Nodes {
		switch op := n.Op.(type) {
		case *ir.MatMul:
			d, err := ir.MatMulShapes(n.Inputs[0].Shape, n.Inputs[1].Shape)
			if err == nil {
				f += 2 * float64(d.Batch.Size()*d.M*d.N*d.K)
			}
		case *ir.Gemm:
			k := n.Inputs[0].Shape[1]
			if op.TransA {
				k = n.Inputs[0].Shape[0]
			}
			f += 2 * float64(n.Outputs[0].Shape.Size()*k)
		}
	}
	return f
}

// BenchmarkForward times one forward pass of the test models at the
// benchmark batch (16×128 tokens for the 5.3 M-parameter bench models, the
// shipped test input for tiny_gpt) on 1 and 2 threads, and reports the
// GEMM work rate over the whole pass. DSTUNE_PROFILE=1 logs the time per
// op.
func BenchmarkForward(b *testing.B) {
	root := sharedtest.Dir(b)
	type model struct {
		name, path string
		tokens     *ir.Tensor
	}
	bench := ir.NewTensor(ir.Int64, ir.Shape{16, 128})
	for i := range bench.Int64s() {
		bench.Int64s()[i] = int64(i*7919%7999 + 1)
	}
	cases := []model{
		{"tiny_gpt", filepath.Join(root, "models", "tiny_gpt", "model.onnx"), models.ReadTensor(b, filepath.Join(root, "models", "tiny_gpt", "test_data_set_0", "input_0.pb"))},
		{"gpt_bench", filepath.Join(root, "bench", "gpt_bench.onnx"), bench},
		{"bert_bench", filepath.Join(root, "bench", "bert_bench.onnx"), bench},
	}
	for _, m := range cases {
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("model=%s/batch=%v/threads=%d", m.name, m.tokens.Shape(), threads), func(b *testing.B) {
				model := models.Read(b, m.path)
				g, err := model.Specialize(ir.Bindings{Shapes: map[string]ir.Shape{"tokens": m.tokens.Shape()}})
				if err != nil {
					b.Fatal(err)
				}
				exe, err := Compile(g, accel.Options{Threads: threads})
				if err != nil {
					b.Fatal(err)
				}
				in := []*ir.Tensor{m.tokens}
				if _, err := exe.Run(in); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := exe.Run(in); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(matmulFLOPs(g)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				if os.Getenv("DSTUNE_PROFILE") == "1" {
					prof, err := exe.Profile(in)
					if err != nil {
						b.Fatal(err)
					}
					for _, p := range prof {
						b.Logf("%-28s %4d calls %10.3f ms", p.Op, p.Calls, float64(p.Time.Microseconds())/1000)
					}
				}
			})
		}
	}
}
