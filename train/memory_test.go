package train

import (
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// The activation estimate follows the CPU backend's memory plan: on the
// demo's transformer it is within a factor 1.5 of the arena the backend
// allocates (which also reuses dying inputs in place, and fragments), at
// every batch size, and it grows linearly with the batch.
func TestActivationPeakFollowsTheMemoryPlan(t *testing.T) {
	m, err := onnx.ReadFile(filepath.Join("..", "demo", "base.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	model, err := ir.NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewModelSource(model, ModelSourceOptions{Task: TaskLM})
	if err != nil {
		t.Fatal(err)
	}
	var peaks []int64
	for _, b := range []int{1, 4, 16} {
		g, err := src.TrainingGraph(BatchShape{b, 24})
		if err != nil {
			t.Fatal(err)
		}
		exe, err := cpu.New().Compile(g, accel.Options{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		arena := int64(exe.(*cpu.Executable).ArenaBytes)
		exe.Close()
		peak := activationPeak(g)
		t.Logf("batch %d×24: estimate %d bytes, the CPU arena %d bytes (%.2f×)", b, peak, arena, float64(peak)/float64(arena))
		if r := float64(peak) / float64(arena); r < 1/1.5 || r > 1.5 {
			t.Errorf("batch %d: estimate %d, arena %d", b, peak, arena)
		}
		peaks = append(peaks, peak)
	}
	// From batch 1 to 4 and from 4 to 16: 3 and 12 more rows.
	if d1, d2 := peaks[1]-peaks[0], peaks[2]-peaks[1]; d2 < 4*d1*9/10 || d2 > 4*d1*11/10 {
		t.Errorf("the estimate is not linear in the batch: %v", peaks)
	}
}
