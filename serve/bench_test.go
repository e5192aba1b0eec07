package serve

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/internal/deltagen"
	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// BenchmarkSwitch times restoring one delta and writing another (what the
// scheduler does between passes of two deltas) on a 31M-parameter
// Llama-shaped model, its weights read into memory or mapped from the
// file; ns/entry is per changed entry of the two.
//
//	go test ./serve -run '^$' -bench Switch
func BenchmarkSwitch(b *testing.B) {
	dir := b.TempDir()
	c := llamagen.Config{Dim: 512, Layers: 8, Vocab: 8192, Heads: 8, KVHeads: 4, Hidden: 1365, Seed: 1}
	if err := llamagen.Write(dir, c); err != nil {
		b.Fatal(err)
	}
	for _, shared := range []bool{true, false} {
		m, err := onnx.ReadFile(filepath.Join(dir, "model.onnx"))
		if err != nil {
			b.Fatal(err)
		}
		load := ir.NewModel
		if shared {
			load = ir.NewModelShared
		}
		model, err := load(m)
		if err != nil {
			b.Fatal(err)
		}
		base, err := NewBase(m, model)
		if err != nil {
			b.Fatal(err)
		}
		for _, eps := range []float64{1e-4, 1e-3, 1e-2} {
			var ps [2]*Patch
			for i := range ps {
				d, err := deltagen.Random(m, eps, 0.01, uint64(i))
				if err != nil {
					b.Fatal(err)
				}
				if ps[i], err = base.NewPatch(d); err != nil {
					b.Fatal(err)
				}
			}
			var s Scheduler
			noop := func() error { return nil }
			// The first writes to a page of a mapped file copy it; time
			// the switches after that.
			s.Run(b.Context(), ps[0], noop)
			s.Run(b.Context(), ps[1], noop)
			b.Run(fmt.Sprintf("shared=%v/eps=%g", shared, eps), func(b *testing.B) {
				i := 0
				for b.Loop() {
					s.Run(b.Context(), ps[i%2], noop)
					i++
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(ps[0].Entries+ps[1].Entries), "ns/entry")
			})
			s.Run(b.Context(), nil, noop)
		}
		m.Close()
	}
}
