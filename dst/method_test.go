package dst

import (
	"bytes"
	"encoding/json"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/train"
	"github.com/dstune/dstune/update"
)

// refScore is Δ from the definitions of --distance.
func refScore(theta, seed float32, d string) float32 {
	diff := theta - seed
	switch d {
	case DistanceAbs:
		return float32(math.Abs(float64(diff)))
	case DistanceRel:
		if diff == 0 {
			return 0
		}
		return float32(math.Abs(float64(diff / seed)))
	}
	return float32(math.Abs(float64(seed * diff)))
}

func sameFloats(a, b []float32) int {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) && !(a[i] != a[i] && b[i] != b[i]) {
			return i
		}
	}
	return -1
}

// TestSilosAndK: the selection Prepare makes has one unit per silo, in
// silo order, with k = SubsetSize(ε, |S|), and every step keeps exactly k
// of each (ties everywhere, zero seeds).
func TestSilosAndK(t *testing.T) {
	modules := map[string]Module{"p0.weight": {Kind: "a"}, "p1.weight": {Kind: "b"}, "p2.weight": {Kind: "b"}, "p3.weight": {Kind: "a"}}
	for _, silo := range []string{SiloModuleLayer, SiloModule, SiloNone} {
		for _, ties := range []bool{false, true} {
			s := testSetup{shapes: [][]int{{40, 30}, {5}, {300}, {2, 3, 50}}, ties: ties, opt: adamwReal, modules: modules, threads: 2, gradSeed: 7}
			s.opts = dstOptions(0.1, DistanceAbs, false, 3)
			s.opts.Silo = silo
			r := newRig(t, s)
			sizes := map[string]int64{}
			for _, p := range r.params {
				sizes[p.Name] = int64(p.Tensor.Len())
			}
			silos := r.m.Silos()
			sel := r.m.Selection()
			if len(sel.Units) != len(silos) {
				t.Fatalf("%s: %d units for %d silos", silo, len(sel.Units), len(silos))
			}
			for i, u := range sel.Units {
				var n int64
				for j, p := range u.Pieces {
					if p.Param != silos[i].Params[j] {
						t.Fatalf("%s: unit %d piece %d is %s, silo member %s", silo, i, j, p.Param, silos[i].Params[j])
					}
					n += sizes[p.Param]
				}
				if u.Name != silos[i].Name || u.K != SubsetSize(0.1, n) {
					t.Fatalf("%s: unit %q k %d, silo %q of %d entries", silo, u.Name, u.K, silos[i].Name, n)
				}
			}
			for step := int64(1); step <= 6; step++ {
				r.steps(t, step, step)
				st := r.state(t)
				for i, u := range sel.Units {
					var kept int
					for _, p := range u.Pieces {
						kept += len(st.Selection.Kept[p.Param])
					}
					if int64(kept) != u.K {
						t.Fatalf("%s step %d: unit %d keeps %d, k = %d", silo, step, i, kept, u.K)
					}
				}
				if _, err := json.Marshal(r.metrics()); err != nil {
					t.Fatalf("metrics do not encode: %v", err)
				}
			}
		}
	}
}

// TestNormalizedSelection checks Appendix B's normalization against the
// definition: one global selection of SubsetSize(ε, n) entries by
// fl32(Δ · fl32(1/c_S)), ties at the lowest global positions.
func TestNormalizedSelection(t *testing.T) {
	for _, norm := range []string{NormalizeSize, NormalizeMean} {
		for _, exact := range []bool{false, true} {
			s := testSetup{shapes: [][]int{{50, 20}, {40}, {7, 9}}, opt: adamwReal, threads: 2, gradSeed: 5}
			s.opts = dstOptions(0.05, DistanceAbs, exact, 3)
			s.opts.Normalize = norm
			r := newRig(t, s)
			plain, ref, graph := plainRig(t, s)
			scales := make([]float32, len(ref))
			var n int64
			for i, p := range ref {
				var sum float64
				for _, x := range r.seeds[p.Name] {
					sum += math.Abs(float64(x))
				}
				c := float64(p.Tensor.Len())
				if norm == NormalizeMean {
					c = sum / float64(p.Tensor.Len())
				}
				scales[i] = float32(1 / c)
				n += int64(p.Tensor.Len())
			}
			k := SubsetSize(0.05, n)
			for step := int64(1); step <= 12; step++ {
				r.steps(t, step, step)
				if _, err := plain.Step(graph, s.grads(step), update.StepInfo{Step: step, LRScale: 1}); err != nil {
					t.Fatal(err)
				}
				var entries []refEntry
				var pos int64
				for i, p := range ref {
					for j, v := range p.Tensor.Float32s() {
						entries = append(entries, refEntry{refScore(v, r.seeds[p.Name][j], DistanceAbs) * scales[i], pos, i, j})
						pos++
					}
				}
				sortEntries(entries)
				for _, e := range entries[k:] {
					ref[e.param].Tensor.Float32s()[e.local] = r.seeds[ref[e.param].Name][e.local]
				}
				st := r.state(t)
				var kept int64
				for i, p := range r.params {
					if j := sameFloats(p.Tensor.Float32s(), ref[i].Tensor.Float32s()); j >= 0 {
						t.Fatalf("%s exact=%v step %d: %s[%d] = %v, reference %v", norm, exact, step, p.Name, j, p.Tensor.Float32s()[j], ref[i].Tensor.Float32s()[j])
					}
					kept += int64(len(st.Selection.Kept[p.Name]))
				}
				if kept != k {
					t.Fatalf("%s step %d: kept %d, k = %d", norm, step, kept, k)
				}
			}
			if got := r.metrics().EpsAlg2 != nil; got == exact {
				t.Errorf("%s exact=%v: eps_alg2 reported: %v", norm, exact, got)
			}
		}
	}
}

// TestRandomMask: a random mask keeps exactly k per silo, never changes,
// depends on the seed, and everything outside it stays at the seed.
func TestRandomMask(t *testing.T) {
	s := testSetup{shapes: [][]int{{60, 30}, {25}}, opt: adamwReal, threads: 1, gradSeed: 9}
	s.opts = dstOptions(0.1, DistanceRandom, false, 3)
	s.opts.Seed = 42
	r := newRig(t, s)
	first := map[string][]int32{}
	for _, p := range r.params {
		first[p.Name] = slices.Clone(r.kept(t, p.Name))
		if int64(len(first[p.Name])) != SubsetSize(0.1, int64(p.Tensor.Len())) {
			t.Fatalf("%s: %d kept, want %d", p.Name, len(first[p.Name]), SubsetSize(0.1, int64(p.Tensor.Len())))
		}
	}
	r.steps(t, 1, 5)
	for _, p := range r.params {
		kept := r.kept(t, p.Name)
		if !slices.Equal(kept, first[p.Name]) {
			t.Fatalf("%s: the random mask changed", p.Name)
		}
		changed := 0
		for j, v := range p.Tensor.Float32s() {
			seed := r.seeds[p.Name][j]
			if _, in := slices.BinarySearch(kept, int32(j)); !in && v != seed {
				t.Fatalf("%s[%d] outside the mask moved", p.Name, j)
			} else if in && v != seed {
				changed++
			}
		}
		if changed == 0 {
			t.Fatalf("%s: nothing in the mask was trained", p.Name)
		}
	}
	s.opts.Seed = 43
	if slices.Equal(newRig(t, s).kept(t, "p0.weight"), first["p0.weight"]) {
		t.Fatal("seeds 42 and 43 chose the same mask")
	}
	s.opts.Seed = 42
	if !slices.Equal(newRig(t, s).kept(t, "p0.weight"), first["p0.weight"]) {
		t.Fatal("the same seed chose another mask")
	}
}

// TestNoChurn: with churn off the subset of the first step stays, and
// the parameters equal the plain optimizer's masked with it.
func TestNoChurn(t *testing.T) {
	s := testSetup{shapes: [][]int{{60, 30}, {25}}, opt: adamwReal, threads: 1, gradSeed: 13}
	s.opts = dstOptions(0.05, DistanceInvRel, false, 3)
	s.opts.Silo, s.opts.Churn = SiloNone, false
	r := newRig(t, s)
	plain, ref, graph := plainRig(t, s)
	r.steps(t, 1, 1)
	first := map[string][]int32{}
	for i, p := range r.params {
		first[p.Name] = slices.Clone(r.kept(t, p.Name))
		copy(ref[i].Tensor.Float32s(), p.Tensor.Float32s()) // the first selection, as the method made it
	}
	if _, err := plain.Step(graph, s.grads(1), update.StepInfo{Step: 1, LRScale: 1}); err != nil {
		t.Fatal(err)
	}
	for i, p := range r.params {
		copy(ref[i].Tensor.Float32s(), p.Tensor.Float32s())
	}
	for step := int64(2); step <= 8; step++ {
		r.steps(t, step, step)
		if _, err := plain.Step(graph, s.grads(step), update.StepInfo{Step: step, LRScale: 1}); err != nil {
			t.Fatal(err)
		}
		for _, p := range ref {
			v := p.Tensor.Float32s()
			for j := range v {
				if _, in := slices.BinarySearch(first[p.Name], int32(j)); !in {
					v[j] = r.seeds[p.Name][j]
				}
			}
		}
		for i, p := range r.params {
			if !slices.Equal(r.kept(t, p.Name), first[p.Name]) {
				t.Fatalf("step %d: %s's subset changed with churn off", step, p.Name)
			}
			if j := sameFloats(p.Tensor.Float32s(), ref[i].Tensor.Float32s()); j >= 0 {
				t.Fatalf("step %d: %s[%d] = %v, reference %v", step, p.Name, j, p.Tensor.Float32s()[j], ref[i].Tensor.Float32s()[j])
			}
		}
		if c := r.metrics().Churn; c == nil || *c != 0 {
			t.Fatalf("step %d: churn %v with a fixed subset", step, c)
		}
	}
}

// TestChurnMetric compares the reported churn with the subsets.
func TestChurnMetric(t *testing.T) {
	s := testSetup{shapes: [][]int{{80, 20}}, opt: adamwReal, threads: 1, gradSeed: 17}
	s.opts = dstOptions(0.05, DistanceAbs, false, 3)
	r := newRig(t, s)
	r.steps(t, 1, 1)
	if r.metrics().Churn != nil {
		t.Fatal("churn reported at the first step")
	}
	sawChurn := false
	for step := int64(2); step <= 10; step++ {
		before := slices.Clone(r.kept(t, "p0.weight"))
		r.steps(t, step, step)
		after := r.kept(t, "p0.weight")
		entered := len(after)
		for _, pos := range after {
			if _, in := slices.BinarySearch(before, pos); in {
				entered--
			}
		}
		m := r.metrics()
		want := float64(entered) / float64(len(after))
		if m.Churn == nil || *m.Churn != want || m.Silos["p0.weight"].Churn == nil {
			t.Fatalf("step %d: churn %v, want %v", step, m.Churn, want)
		}
		sawChurn = sawChurn || entered > 0
	}
	if !sawChurn {
		t.Fatal("the subset never changed: the test checks nothing")
	}
}

// TestStateRoundTrip: a method and trainer restored from the checkpoint
// form of the state continue exactly as the original, for every mode.
func TestStateRoundTrip(t *testing.T) {
	modes := map[string]func(*Options){
		"iterative":   func(o *Options) {},
		"exact":       func(o *Options) { o.Threshold = ThresholdExact },
		"no-churn":    func(o *Options) { o.Churn = false },
		"random":      func(o *Options) { o.Distance = DistanceRandom },
		"normalized":  func(o *Options) { o.Normalize = NormalizeMean },
		"iterative-5": func(o *Options) { o.RefineSteps = 5 },
		"paper-alg2":  func(o *Options) { o.PaperAlg2 = true },
	}
	for name, mod := range modes {
		t.Run(name, func(t *testing.T) {
			s := testSetup{shapes: [][]int{{40, 30}, {9}}, opt: sgdMom, threads: 1, gradSeed: 21}
			s.opts = dstOptions(0.05, DistanceRel, false, 3)
			mod(&s.opts)
			a := newRig(t, s)
			a.steps(t, 1, 6)
			st := a.engineState(t)
			b := newRig(t, s)
			sel, err := b.m.LoadState(st.Method)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.tr.SetState(&update.State{Params: st.Params, Optimizer: st.Optimizer, Selection: sel}); err != nil {
				t.Fatal(err)
			}
			a.steps(t, 7, 12)
			b.steps(t, 7, 12)
			for i, p := range a.params {
				if j := sameFloats(p.Tensor.Float32s(), b.params[i].Tensor.Float32s()); j >= 0 {
					t.Fatalf("%s[%d]: %v uninterrupted, %v restored", p.Name, j, p.Tensor.Float32s()[j], b.params[i].Tensor.Float32s()[j])
				}
			}
			ja, _ := json.Marshal(a.metrics())
			jb, _ := json.Marshal(b.metrics())
			ja, jb = dropTimings(t, ja), dropTimings(t, jb)
			if !bytes.Equal(ja, jb) {
				t.Fatalf("metrics %s uninterrupted, %s restored", ja, jb)
			}
		})
	}
}

// dropTimings removes the fields that measure time from a metrics record.
func dropTimings(t *testing.T, rec []byte) []byte {
	var m map[string]any
	if err := json.Unmarshal(rec, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "optimizer_ms")
	delete(m, "dst_ms")
	out, _ := json.Marshal(m)
	return out
}

func TestLoadStateRejects(t *testing.T) {
	s := testSetup{shapes: [][]int{{10, 10}}, opt: sgdMom, threads: 1, gradSeed: 1}
	s.opts = dstOptions(0.1, DistanceAbs, false, 3)
	a := newRig(t, s)
	a.steps(t, 1, 3)
	corrupt := func(f func(st *train.MethodState)) error {
		st := a.engineState(t).Method
		for i := range st.Tensors {
			st.Tensors[i].Data = slices.Clone(st.Tensors[i].Data)
		}
		f(&st)
		_, err := newRig(t, s).m.LoadState(st)
		return err
	}
	for name, f := range map[string]func(st *train.MethodState){
		"descending": func(st *train.MethodState) {
			d := st.Tensors[2].Data
			copy(d[0:4], d[4:8])
		},
		"outside": func(st *train.MethodState) {
			d := st.Tensors[2].Data
			d[len(d)-1] = 0x7f
		},
		"missing":   func(st *train.MethodState) { st.Tensors = st.Tensors[:2] },
		"ready":     func(st *train.MethodState) { st.Tensors[1].Data[0] = 7 },
		"threshold": func(st *train.MethodState) { copy(st.Tensors[0].Data, []byte{0, 0, 0x80, 0xff}) },
		"meta":      func(st *train.MethodState) { st.Meta = map[string]string{} },
	} {
		if err := corrupt(f); err == nil {
			t.Errorf("%s: LoadState accepted a corrupt state", name)
		}
	}
	if err := corrupt(func(*train.MethodState) {}); err != nil {
		t.Fatalf("the state as saved: %v", err)
	}
	random := s
	random.opts.Distance = DistanceRandom
	r := newRig(t, random)
	st := r.engineState(t).Method
	st.Meta[metaFixed] = "false"
	if _, err := newRig(t, random).m.LoadState(st); err == nil {
		t.Error("a random mask's state that is not fixed was accepted")
	}
}

// TestDeltaOfRun: the delta written after a step, read back and applied
// to the seeds, gives the trained parameters exactly.
func TestDeltaOfRun(t *testing.T) {
	s := testSetup{shapes: [][]int{{30, 20}, {12}}, opt: adamwReal, threads: 1, gradSeed: 23}
	s.opts = dstOptions(0.1, DistanceInvRel, false, 3)
	r := newRig(t, s)
	r.m.baseHash = "ab" + string(bytes.Repeat([]byte("0"), 62))
	r.steps(t, 1, 5)
	dir := t.TempDir()
	if err := r.m.WriteRunFiles(dir, r.engineState(t)); err != nil {
		t.Fatal(err)
	}
	d, err := ReadDelta(filepath.Join(dir, DeltaFile))
	if err != nil {
		t.Fatal(err)
	}
	if d.Meta.Steps != 5 || d.Meta.Method != "dst" || d.Meta.Epsilon != 0.1 || d.Meta.Distance != DistanceInvRel ||
		d.Meta.Silo != SiloModuleLayer || d.Meta.BaseSHA256 != r.m.baseHash || d.Meta.Extra["threshold"] != ThresholdIterative {
		t.Fatalf("metadata %+v", d.Meta)
	}
	params := map[string][]float32{}
	for _, p := range r.params {
		params[p.Name] = slices.Clone(r.seeds[p.Name])
		td := d.Tensor(p.Name)
		if td == nil || int64(len(td.Indices)) != SubsetSize(0.1, int64(p.Tensor.Len())) {
			t.Fatalf("%s: delta has %v", p.Name, td)
		}
	}
	if err := d.ApplyTo(params); err != nil {
		t.Fatal(err)
	}
	for _, p := range r.params {
		if j := sameFloats(params[p.Name], p.Tensor.Float32s()); j >= 0 {
			t.Fatalf("%s[%d]: seed+delta %v, trained %v", p.Name, j, params[p.Name][j], p.Tensor.Float32s()[j])
		}
	}
}

// TestMetricsOfDeviceResults: a result without host measurements (a
// device's) gives the same fields but the timings and band entries.
func TestMetricsOfDeviceResults(t *testing.T) {
	s := testSetup{shapes: [][]int{{30, 20}, {12}}, opt: adamwReal, threads: 1, gradSeed: 3}
	s.opts = dstOptions(0.1, DistanceInvRel, false, 3)
	r := newRig(t, s)
	r.steps(t, 1, 3)
	host := r.metrics()
	device := *r.res
	device.Host = nil
	dev := r.m.Metrics(r.step, &device).(*StepMetrics)
	if host.BandEntries == nil || host.OptimizerMS == nil || host.DSTMS == nil {
		t.Fatalf("host metrics without timings: %+v", host)
	}
	if dev.BandEntries != nil || dev.OptimizerMS != nil || dev.DSTMS != nil {
		t.Fatalf("device metrics with timings: %+v", dev)
	}
	host.BandEntries, host.OptimizerMS, host.DSTMS = nil, nil, nil
	jh, _ := json.Marshal(host)
	jd, _ := json.Marshal(dev)
	if !bytes.Equal(jh, jd) {
		t.Fatalf("host %s, device %s", jh, jd)
	}
}

var _ = ir.LossOutput

// TestMetricsReportShortSilos: where fewer Δ than k are positive (the
// first SGD step leaves entries with a zero gradient unchanged), a silo
// keeps fewer than k entries, and the metrics say how many: "kept" per
// such silo and overall, and "short_silos".
func TestMetricsReportShortSilos(t *testing.T) {
	s := testSetup{shapes: [][]int{{40, 30}, {300}}, ties: true, opt: update.Optimizer{Name: update.OptimizerSGD, SGD: &update.SGD{LR: 0.125}}, threads: 2, gradSeed: 9}
	s.opts = dstOptions(0.9, DistanceAbs, false, 3)
	r := newRig(t, s)
	r.steps(t, 1, 1)
	m := r.metrics()
	st := r.state(t)
	var total int64
	short := 0
	for i, silo := range r.m.Silos() {
		var kept, moved int64
		for _, name := range silo.Params {
			kept += int64(len(st.Selection.Kept[name]))
			seed := r.seeds[name]
			for j, v := range st.Params[name] {
				if v != seed[j] {
					moved++
				}
			}
		}
		total += kept
		k := r.m.Selection().Units[i].K
		sm := m.Silos[silo.Name]
		if kept >= k {
			t.Fatalf("silo %s keeps %d of k = %d: the test wants fewer positive Δ than k", silo.Name, kept, k)
		}
		short++
		if sm.Kept == nil || *sm.Kept != kept || kept != moved {
			t.Fatalf("silo %s: metrics kept %v, state keeps %d, %d entries moved", silo.Name, sm.Kept, kept, moved)
		}
	}
	if m.Kept != total || m.ShortSilos != short {
		t.Fatalf("metrics kept %d short_silos %d, want %d and %d", m.Kept, m.ShortSilos, total, short)
	}
}
