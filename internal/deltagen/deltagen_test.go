package deltagen

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/onnx"
)

// TestRandom: the delta is valid, records the model's base hash and
// changes round(ε·n) entries of every float32 tensor, each by a nonzero
// amount.
func TestRandom(t *testing.T) {
	dir := t.TempDir()
	if err := llamagen.Write(dir, llamagen.Config{Vocab: 40, Dim: 16, Layers: 1, Heads: 2, KVHeads: 1, Hidden: 24, Seed: 2}); err != nil {
		t.Fatal(err)
	}
	m, err := onnx.ReadFile(filepath.Join(dir, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const eps = 0.1
	d, err := Random(m, eps, 0.5, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	inits, err := dst.InitializersOf(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CheckBase(inits); err != nil {
		t.Error(err)
	}
	for _, it := range inits {
		td := d.Tensor(it.Name)
		n := len(it.Data) / 4
		if want := max(1, int(math.Round(eps*float64(n)))); td == nil || len(td.Indices) != want {
			t.Errorf("%s: %v entries changed, want %d", it.Name, td, want)
			continue
		}
		for j, x := range td.Indices {
			old := math.Float32frombits(uint32(it.Data[4*x]) | uint32(it.Data[4*x+1])<<8 | uint32(it.Data[4*x+2])<<16 | uint32(it.Data[4*x+3])<<24)
			if td.Values[j] == old {
				t.Errorf("%s[%d] unchanged", it.Name, x)
			}
		}
	}
}
