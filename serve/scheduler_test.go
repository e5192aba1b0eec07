package serve

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/deltagen"
	"github.com/dstune/dstune/internal/llamagen"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// testBase loads the test model and makes n patches of random deltas.
func testBase(t *testing.T, n int, dtype onnx.DataType) (*Base, []*Patch, []*dst.Delta) {
	t.Helper()
	dir := t.TempDir()
	c := testModel
	c.DType = dtype
	if err := llamagen.Write(dir, c); err != nil {
		t.Fatal(err)
	}
	m, err := onnx.ReadFile(filepath.Join(dir, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	model, err := ir.NewModelShared(m)
	if err != nil {
		t.Fatal(err)
	}
	base, err := NewBase(m, model)
	if err != nil {
		t.Fatal(err)
	}
	var patches []*Patch
	var deltas []*dst.Delta
	for i := range n {
		d, err := randomDelta(m, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		p, err := base.NewPatch(d)
		if err != nil {
			t.Fatal(err)
		}
		patches, deltas = append(patches, p), append(deltas, d)
	}
	return base, patches, deltas
}

// randomDelta is deltagen's for float32 models; for half-precision models
// it changes the same positions of every float16 tensor.
func randomDelta(m *onnx.Model, seed uint64) (*dst.Delta, error) {
	d, err := deltagen.Random(m, 0.02, 0.3, seed)
	if err == nil {
		return d, nil
	}
	inits, err := dst.InitializersOf(m)
	if err != nil {
		return nil, err
	}
	hash, err := dst.BaseHash(inits)
	if err != nil {
		return nil, err
	}
	d = &dst.Delta{Meta: dst.Metadata{BaseSHA256: hash}}
	for _, it := range inits {
		if it.DType != "F16" {
			continue
		}
		td := dst.TensorDelta{Name: it.Name, Dims: it.Dims}
		for i := int64(seed % 7); i < int64(len(it.Data)/2); i += 37 {
			td.Indices = append(td.Indices, i)
			td.Values = append(td.Values, float32(i%13)/7+1/3.0)
		}
		d.Tensors = append(d.Tensors, td)
	}
	return d, nil
}

// applied is the model's parameters with d written by ApplyRaw, as
// `dstune apply` writes them.
func applied(t *testing.T, base *Base, d *dst.Delta) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, p := range base.Model.Params {
		out[p.Name] = bytes.Clone(p.Tensor.Bytes())
	}
	if d == nil {
		return out
	}
	for i := range d.Tensors {
		td := &d.Tensors[i]
		if err := td.ApplyRaw(base.inits[td.Name].dtype, out[td.Name]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestPatchMatchesApplyRaw: a patch writes exactly the bytes ApplyRaw
// writes (float32 and float16 parameters) and restores the base.
func TestPatchMatchesApplyRaw(t *testing.T) {
	for _, dt := range []onnx.DataType{onnx.Float, onnx.Float16} {
		base, patches, deltas := testBase(t, 1, dt)
		want := applied(t, base, deltas[0])
		orig := applied(t, base, nil)
		var saved saved
		patches[0].Apply(&saved)
		for _, p := range base.Model.Params {
			if !bytes.Equal(p.Tensor.Bytes(), want[p.Name]) {
				t.Errorf("%s: %s differs from ApplyRaw's bytes", dt, p.Name)
			}
		}
		patches[0].Restore(&saved)
		for _, p := range base.Model.Params {
			if !bytes.Equal(p.Tensor.Bytes(), orig[p.Name]) {
				t.Errorf("%s: %s not restored", dt, p.Name)
			}
		}
		if patches[0].Entries != deltas[0].NumChanged() || patches[0].Bytes() <= 0 {
			t.Errorf("%s: %d entries, %d bytes", dt, patches[0].Entries, patches[0].Bytes())
		}
	}
}

// TestSchedulerExclusive: passes of different deltas never overlap, every
// pass sees exactly its delta's weights, and passes of one delta do run
// together.
func TestSchedulerExclusive(t *testing.T) {
	base, patches, deltas := testBase(t, 3, onnx.Float)
	patches = append(patches, nil)
	deltas = append(deltas, nil)
	want := make([]map[string][]byte, len(patches))
	for i, d := range deltas {
		want[i] = applied(t, base, d)
	}
	var s Scheduler
	var mu sync.Mutex
	running := map[*Patch]int{}
	overlapSame := false
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Half the goroutines run leases of four passes.
			var lease *Lease
			defer func() {
				if lease != nil {
					lease.Close()
				}
			}()
			for step := range 20 {
				i := (g + step/4) % len(patches)
				run := func(ctx context.Context, step func() error) error { return s.Run(ctx, patches[i], step) }
				if g%2 == 0 {
					if step%4 == 0 {
						if lease != nil {
							lease.Close()
						}
						lease = s.Lease(patches[i])
					}
					run = lease.Run
				}
				err := run(context.Background(), func() error {
					mu.Lock()
					running[patches[i]]++
					for p, n := range running {
						if n > 0 && p != patches[i] {
							mu.Unlock()
							return fmt.Errorf("delta %d runs while another does", i)
						}
					}
					if running[patches[i]] > 1 {
						overlapSame = true
					}
					mu.Unlock()
					for _, p := range base.Model.Params {
						if !bytes.Equal(p.Tensor.Bytes(), want[i][p.Name]) {
							return fmt.Errorf("delta %d: %s holds other weights", i, p.Name)
						}
					}
					time.Sleep(100 * time.Microsecond)
					mu.Lock()
					running[patches[i]]--
					mu.Unlock()
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if !overlapSame {
		t.Error("passes of one delta never ran together")
	}
	for _, p := range base.Model.Params {
		s.mu.Lock()
		active := s.active
		s.mu.Unlock()
		idx := len(patches) - 1
		for i, q := range patches {
			if q == active {
				idx = i
			}
		}
		if !bytes.Equal(p.Tensor.Bytes(), want[idx][p.Name]) {
			t.Errorf("%s: after the passes the weights are not the active delta's", p.Name)
		}
	}
}

// TestStalledLease: a lease whose request stops between passes (a client
// that does not read) does not keep another delta waiting.
func TestStalledLease(t *testing.T) {
	_, patches, _ := testBase(t, 2, onnx.Float)
	var s Scheduler
	stalled := s.Lease(patches[0])
	if err := stalled.Run(context.Background(), func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- s.Run(context.Background(), patches[1], func() error { return nil }) }()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled lease kept another delta waiting")
	}
	// The stalled lease's next pass queues and runs with its delta.
	if err := stalled.Run(context.Background(), func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.active != patches[0] {
			t.Error("the lease's pass ran without its delta")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	stalled.Close()
	if s.holders != 0 || s.running != 0 {
		t.Errorf("%d holders, %d running after everything closed", s.holders, s.running)
	}
}

// TestSchedulerCancelWhileWaiting: a pass whose context ends while it
// waits returns the context's error, and the others proceed.
func TestSchedulerCancelWhileWaiting(t *testing.T) {
	_, patches, _ := testBase(t, 2, onnx.Float)
	var s Scheduler
	hold := make(chan struct{})
	started := make(chan struct{})
	go s.Run(context.Background(), patches[0], func() error { close(started); <-hold; return nil })
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx, patches[1], func() error { return nil }) }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("waiting pass returned %v, want context.Canceled", err)
	}
	close(hold)
	if err := s.Run(context.Background(), patches[1], func() error { return nil }); err != nil {
		t.Error(err)
	}
}

// TestPatchFloat64ValuesRoundOnce: a delta's float64 values (F64 in the
// file) reach a float16 parameter rounded once, as ApplyRaw writes them:
// 1 + 2⁻¹¹ + 2⁻³⁰ lies just above the tie between float16's 1 and
// 1 + 2⁻¹⁰ and rounds up, where rounding through float32 first (to the
// tie 1 + 2⁻¹¹, then to even) would give 1. A value past float16's range
// is refused naming its element of the tensor.
func TestPatchFloat64ValuesRoundOnce(t *testing.T) {
	base, _, deltas := testBase(t, 1, onnx.Float16)
	td := deltas[0].Tensors[0]
	v := 1 + math.Ldexp(1, -11) + math.Ldexp(1, -30)
	pos := td.Indices[len(td.Indices)-1]
	d := &dst.Delta{Meta: deltas[0].Meta, Tensors: []dst.TensorDelta{{Name: td.Name, Dims: td.Dims,
		Indices: []int64{pos}, Values: []float32{float32(v)}, Values64: []float64{v}}}}
	p, err := base.NewPatch(d)
	if err != nil {
		t.Fatal(err)
	}
	want := applied(t, base, d)
	p.Apply(nil)
	got := base.Model.Param(td.Name).Tensor.Bytes()
	if !bytes.Equal(got, want[td.Name]) {
		t.Errorf("%s: the patch's bytes differ from ApplyRaw's", td.Name)
	}
	if h := binary.LittleEndian.Uint16(got[2*pos:]); h != 0x3c01 {
		t.Errorf("%s[%d] = float16 %#04x, want 0x3c01 (1 + 2⁻¹⁰)", td.Name, pos, h)
	}
	d.Tensors[0].Values, d.Tensors[0].Values64 = []float32{70000}, []float64{70000}
	if _, err := base.NewPatch(d); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("element %d [", pos)) {
		t.Errorf("a value past float16's range: %v", err)
	}
}
