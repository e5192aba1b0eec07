package tpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// ref64 is the float64 reference of one update (reference64).
type ref64 struct {
	norm, factor float64
	params       map[string][]float32 // Θ after the update, rounded to float32
	slots        map[string][]update.Slot
	sel          *update.SelectionState
	res          *update.SelectionResult
}

// reference64 computes one update in float64 from a trainer's state st
// before it and the gradients the update reads: their global L2 norm,
// the clip factor update.ClipFactor(norm, maxNorm) (maxNorm 0: none),
// update.Reference's optimizer step on every parameter from its state and,
// with a selection, update.ReferenceSelect on Θ̂ rounded to float32.
func reference64(prog *update.Program, shapes map[string]ir.Shape, seeds map[string][]float32, st *update.State,
	grads map[string][]float64, info update.StepInfo, maxNorm float64) *ref64 {
	var sq float64
	for _, g := range grads {
		for _, x := range g {
			sq += x * x
		}
	}
	r := &ref64{norm: math.Sqrt(sq), params: map[string][]float32{}, slots: map[string][]update.Slot{}}
	r.factor = update.ClipFactor(r.norm, maxNorm)
	for name, v := range st.Params {
		p, g := make([]float64, len(v)), make([]float64, len(v))
		for i := range v {
			p[i], g[i] = float64(v[i]), grads[name][i]*r.factor
		}
		var slots [][]float64
		for _, s := range st.Optimizer[name] {
			d := make([]float64, len(s.Data))
			for i, x := range s.Data {
				d[i] = float64(x)
			}
			slots = append(slots, d)
		}
		prog.Optimizer.Reference(shapes[name], p, g, slots, info)
		r.params[name] = toF32(p)
		for i, s := range st.Optimizer[name] {
			r.slots[name] = append(r.slots[name], update.Slot{Name: s.Name, Shape: s.Shape, Data: toF32(slots[i])})
		}
	}
	if prog.Selection != nil {
		r.sel = st.Selection.Clone()
		r.res = update.ReferenceSelect(prog.Selection, r.params, seeds, r.sel)
	}
	return r
}

func toF32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// Tolerances of the device (float32, evaluated exactly) against the
// float64 reference.
const (
	refParamRTol, refParamATol = 1e-5, 1e-6
	refSlotRTol                = 1e-4 // and 1e-6 of the slot's largest entry
	refNormRTol                = 1e-5
)

// diffRef64 compares a trainer's state after an update (and the update's
// selection outcome) with the float64 reference and describes what is
// off: parameters and optimizer slots beyond the tolerances, selections
// keeping other counts. Entries that the device and the reference put in
// different subsets (rounding can move one across the k-th largest Δ) are
// left out of the parameters' comparison and counted.
func diffRef64(st *update.State, sr *update.SelectionResult, ref *ref64) (off []string, otherEntries int) {
	names := make([]string, 0, len(ref.params))
	for name := range ref.params {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		got, want := st.Params[name], slices.Clone(ref.params[name])
		if ref.sel != nil {
			in := func(kept []int32) []bool {
				m := make([]bool, len(want))
				for _, pos := range kept {
					m[pos] = true
				}
				return m
			}
			dm, rm := in(st.Selection.Kept[name]), in(ref.sel.Kept[name])
			for i := range dm {
				if dm[i] != rm[i] {
					otherEntries++
					want[i] = got[i]
				}
			}
		}
		shape := ir.Shape{len(got)}
		if d := ir.Compare(ir.FromFloat32s(shape, got), ir.FromFloat32s(shape, want), refParamRTol, refParamATol); !d.OK() {
			off = append(off, fmt.Sprintf("%s: %v", name, d))
		}
		for i, s := range ref.slots[name] {
			g := st.Optimizer[name][i].Data
			var top float64
			for _, x := range s.Data {
				top = max(top, math.Abs(float64(x)))
			}
			shape := ir.Shape{len(g)}
			if d := ir.Compare(ir.FromFloat32s(shape, g), ir.FromFloat32s(shape, s.Data), refSlotRTol, 1e-6*top); !d.OK() {
				off = append(off, fmt.Sprintf("%s/%s: %v", name, s.Name, d))
			}
		}
	}
	if ref.res != nil {
		for i, u := range ref.res.Units {
			if g := sr.Units[i]; g.Kept != u.Kept {
				off = append(off, fmt.Sprintf("unit %d keeps %d, the reference %d", i, g.Kept, u.Kept))
			}
		}
	}
	return off, otherEntries
}

// checkRef64 checks an update on the device against the float64
// reference: the gradient norm within refNormRTol, the state within the
// tolerances. When the reference clipped, it also checks that the
// comparison can fail: the unclipped reference must be off.
func checkRef64(t *testing.T, what string, r *stepRig, before *update.State, grads map[string][]float64, info update.StepInfo, res *update.Result) (clipped bool, otherEntries int) {
	t.Helper()
	shapes := map[string]ir.Shape{}
	for _, p := range r.tg.Params {
		shapes[p.Name] = p.Value.Shape
	}
	after, err := r.dev.State()
	if err != nil {
		t.Fatal(err)
	}
	ref := reference64(r.prog, shapes, r.host.seeds, before, grads, info, r.prog.MaxGradNorm)
	if rel := relDiff(res.GradNorm, ref.norm); rel > refNormRTol {
		t.Errorf("%s: gradient norm %.9g, float64 reference %.9g (rel %.2g)", what, res.GradNorm, ref.norm, rel)
	}
	off, other := diffRef64(after, res.Selection, ref)
	for _, o := range off {
		t.Errorf("%s: %s", what, o)
	}
	if ref.factor < 0.99 {
		unclipped := reference64(r.prog, shapes, r.host.seeds, before, grads, info, 0)
		if off, _ := diffRef64(after, res.Selection, unclipped); len(off) == 0 {
			t.Errorf("%s: clipped by %.3g, yet the update matches the unclipped reference too", what, ref.factor)
		}
	}
	return ref.factor < 1, other
}

// TestClipMatchesFloat64Reference takes steps with MaxGradNorm at 0.4 of
// the first batch's gradient norm on the evaluator and compares each with
// the float64 reference from the same state: the gradients (the lowered
// training graph's, as the device computes them), their norm in float64
// (Result.GradNorm within 1e-5 relative), update.ClipFactor,
// update.Reference for the optimizer and update.ReferenceSelect for DST.
// Each step must be clipped and must differ from the unclipped reference.
func TestClipMatchesFloat64Reference(t *testing.T) {
	cases := stepCases()
	for _, name := range []string{"adamw-full", "sgd-momentum-clip", "adamw-iterative-abs", "sgd-exact-abs", "adamw-normalize-size"} {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(11, uint64(len(name))))
			tg := mlp(t, rng)
			batches := make([][]*ir.Tensor, 4)
			for i := range batches {
				batches[i] = randBatch(rng)
			}
			c := cases[name]
			{
				probe := newHostTrainer(t, tg, &update.Program{Optimizer: c.opt}, nil)
				_, g := probe.grads(t, batches[0])
				norm, _ := probe.clip(g)
				c.maxGradNorm = 0.4 * float64(norm)
			}
			r := newStepRig(t, &evalDevice{}, tg, c)
			defer r.dev.Close()
			other := 0
			for i, batch := range batches {
				info := update.StepInfo{Step: int64(i + 1), LRScale: 1}
				before, err := r.dev.State()
				if err != nil {
					t.Fatal(err)
				}
				_, g := r.host.grads(t, batch)
				grads := map[string][]float64{}
				for n, v := range g {
					grads[n] = toF64(v)
				}
				res := r.step(t, info, batch) // bit for bit the float32 host mirror
				clipped, o := checkRef64(t, fmt.Sprintf("step %d", info.Step), r, before, grads, info, res)
				if !clipped {
					t.Errorf("step %d: gradient norm %g, not clipped at %g", info.Step, res.GradNorm, c.maxGradNorm)
				}
				other += o
			}
			t.Logf("max norm %.4g; entries in another subset than the reference's: %d", c.maxGradNorm, other)
		})
	}
}

// TestClipAboveNormChangesNothing runs the same steps with MaxGradNorm
// far above the gradients' norms and without clipping: parameters, state
// and outcomes must be identical, and Result.GradNorm — computed either
// way — must match the float64 norm of the gradients.
func TestClipAboveNormChangesNothing(t *testing.T) {
	for _, name := range []string{"adamw-iterative-abs", "sgd-momentum-clip"} {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(12, uint64(len(name))))
			tg := mlp(t, rng)
			c := stepCases()[name]
			c.maxGradNorm = 0
			plain := newStepRig(t, &evalDevice{}, tg, c)
			c.maxGradNorm = 100
			high := newStepRig(t, &evalDevice{}, tg, c)
			defer plain.dev.Close()
			defer high.dev.Close()
			for step := int64(1); step <= 5; step++ {
				batch := randBatch(rng)
				info := update.StepInfo{Step: step, LRScale: 1}
				_, g := plain.host.grads(t, batch)
				var sq float64
				for _, v := range g {
					for _, x := range v {
						sq += float64(x) * float64(x)
					}
				}
				a := plain.step(t, info, batch)
				b := high.step(t, info, batch)
				if rel := relDiff(a.GradNorm, math.Sqrt(sq)); rel > refNormRTol {
					t.Errorf("step %d: gradient norm %.9g, float64 %.9g", step, a.GradNorm, math.Sqrt(sq))
				}
				if a.GradNorm != b.GradNorm || a.Loss != b.Loss || fmt.Sprint(a.Selection) != fmt.Sprint(b.Selection) {
					t.Errorf("step %d: results differ: %+v, clipping above the norm %+v", step, a, b)
				}
				sa, err := plain.dev.State()
				if err != nil {
					t.Fatal(err)
				}
				sb, err := high.dev.State()
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(sa, sb) {
					t.Fatalf("step %d: the state differs with clipping above the norm", step)
				}
			}
		})
	}
}

// accumulate runs Accumulate on the device and the host mirror and
// compares the batch's loss bit for bit.
func (r *stepRig) accumulate(t testing.TB, batch []*ir.Tensor, weight float32, first bool) *update.Result {
	t.Helper()
	res, err := r.dev.Accumulate(r.tg, batch, weight, first)
	if err != nil {
		t.Fatal(err)
	}
	r.host.accumulate(t, batch, weight, first)
	if math.Float32bits(res.Loss) != math.Float32bits(r.host.lastLoss) {
		t.Fatalf("accumulate: loss %g, host %g", res.Loss, r.host.lastLoss)
	}
	if res.GradNorm != 0 || res.Selection != nil {
		t.Fatalf("accumulate reports an update: %+v", res)
	}
	return res
}

// apply runs Apply on the device and the host mirror and compares them
// bit for bit (stepRig.compare).
func (r *stepRig) apply(t testing.TB, info update.StepInfo) *update.Result {
	t.Helper()
	res, err := r.dev.Apply(info)
	if err != nil {
		t.Fatal(err)
	}
	r.host.apply(t, info)
	if res.Loss != 0 {
		t.Fatalf("apply: loss %g, want 0", res.Loss)
	}
	r.compare(t, info, res)
	return res
}

func mustState(t testing.TB, tr *Trainer) *update.State {
	t.Helper()
	st, err := tr.State()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestAccumulateMatchesReference trains with gradient accumulation —
// Accumulate(b1, w1, first), Accumulate(b2, w2), Apply — interleaved with
// plain Steps, with and without DST and clipping, for AdamW, SGD and
// Adafactor. After every Apply the device must equal the float32 host
// mirror bit for bit (loss, gradient norm, parameters, subsets, the
// selection's outcome and state) and the float64 reference of the update
// from w1·g1 + w2·g2 (norm, clipping, update.Reference,
// update.ReferenceSelect) within tolerances; Accumulate must change no
// parameter or state.
func TestAccumulateMatchesReference(t *testing.T) {
	cases := stepCases()
	clippedSteps := 0
	for _, name := range []string{"adamw-full", "adamw-full-clip", "adamw-iterative-abs-clip", "sgd-nesterov-no-churn-clip", "adafactor-full-clip", "adamw-exact-rel"} {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(13, uint64(len(name))))
			tg := mlp(t, rng)
			r := newStepRig(t, &evalDevice{}, tg, cases[name])
			defer r.dev.Close()
			step := int64(0)
			for round := range 5 {
				step++
				info := update.StepInfo{Step: step, LRScale: 1 - float64(step)/20}
				b1, b2 := randBatch(rng), randBatch(rng)
				w1, w2 := float32(0.25), float32(0.75)
				if round%2 == 1 {
					w1, w2 = 0.5, 0.5
				}
				before := mustState(t, r.dev)
				_, g1 := r.host.grads(t, b1)
				_, g2 := r.host.grads(t, b2)
				grads := map[string][]float64{}
				for n := range g1 {
					grads[n] = make([]float64, len(g1[n]))
					for i := range g1[n] {
						grads[n][i] = float64(w1)*float64(g1[n][i]) + float64(w2)*float64(g2[n][i])
					}
				}
				r.accumulate(t, b1, w1, true)
				r.accumulate(t, b2, w2, false)
				if !reflect.DeepEqual(mustState(t, r.dev), before) {
					t.Fatalf("step %d: Accumulate changed the parameters or state", step)
				}
				res := r.apply(t, info)
				clipped, _ := checkRef64(t, fmt.Sprintf("step %d (apply)", step), r, before, grads, info, res)
				if clipped {
					clippedSteps++
				}
				// A plain step between accumulations.
				if round%2 == 0 {
					step++
					r.step(t, update.StepInfo{Step: step, LRScale: 1}, randBatch(rng))
				}
			}
		})
	}
	if clippedSteps == 0 {
		t.Error("no accumulated update was clipped")
	}
}

// TestAccumulateFirstDropsSum accumulates garbage (two batches, large
// weights) before every sum that starts with first: the trainer must end
// where one that never saw the garbage ends, while a control that adds
// the garbage (first unset) must not. After Apply the sum is empty: an
// Accumulate without first then Apply equals Step on that batch, bit for
// bit.
func TestAccumulateFirstDropsSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 1))
	tg := mlp(t, rng)
	c := stepCases()["adamw-iterative-abs-clip"]
	trainer := func() *Trainer { r := newStepRig(t, &evalDevice{}, tg, c); return r.dev }
	garbage, clean, control, stepped := trainer(), trainer(), trainer(), trainer()
	defer garbage.Close()
	defer clean.Close()
	defer control.Close()
	defer stepped.Close()
	acc := func(tr *Trainer, b []*ir.Tensor, w float32, first bool) {
		t.Helper()
		if _, err := tr.Accumulate(tg, b, w, first); err != nil {
			t.Fatal(err)
		}
	}
	apply := func(tr *Trainer, info update.StepInfo) *update.Result {
		t.Helper()
		res, err := tr.Apply(info)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	for step := int64(1); step <= 4; step++ {
		info := update.StepInfo{Step: step, LRScale: 1}
		b1, b2, j1, j2 := randBatch(rng), randBatch(rng), randBatch(rng), randBatch(rng)
		acc(garbage, j1, 7, true)
		acc(garbage, j2, -3, false)
		acc(garbage, b1, 0.5, true)
		acc(garbage, b2, 0.5, false)
		acc(clean, b1, 0.5, true)
		acc(clean, b2, 0.5, false)
		acc(control, j1, 7, true)
		acc(control, b1, 0.5, false)
		acc(control, b2, 0.5, false)
		acc(stepped, b1, 0.5, true)
		acc(stepped, b2, 0.5, false)
		rg, rc := apply(garbage, info), apply(clean, info)
		apply(control, info)
		apply(stepped, info)
		if fmt.Sprintf("%+v %+v", rg.GradNorm, rg.Selection) != fmt.Sprintf("%+v %+v", rc.GradNorm, rc.Selection) {
			t.Errorf("step %d: results differ: %+v, without the garbage %+v", step, rg, rc)
		}
		if !reflect.DeepEqual(mustState(t, garbage), mustState(t, clean)) {
			t.Fatalf("step %d: first did not drop the garbage", step)
		}
		if reflect.DeepEqual(mustState(t, control), mustState(t, clean)) {
			t.Fatalf("step %d: the control (garbage kept) ends where the clean run does: the test cannot tell", step)
		}
	}
	// The sum is empty after Apply: first is implied.
	for step := int64(5); step <= 7; step++ {
		info := update.StepInfo{Step: step, LRScale: 1}
		b := randBatch(rng)
		ra, err := clean.Accumulate(tg, b, 1, false)
		if err != nil {
			t.Fatal(err)
		}
		rb := apply(clean, info)
		rs, err := stepped.Step(tg, b, info)
		if err != nil {
			t.Fatal(err)
		}
		if ra.Loss != rs.Loss || rb.GradNorm != rs.GradNorm || fmt.Sprint(rb.Selection) != fmt.Sprint(rs.Selection) {
			t.Errorf("step %d: Accumulate+Apply gives loss %g norm %g %v, Step %g %g %v", step, ra.Loss, rb.GradNorm, rb.Selection, rs.Loss, rs.GradNorm, rs.Selection)
		}
		if !reflect.DeepEqual(mustState(t, clean), mustState(t, stepped)) {
			t.Fatalf("step %d: Accumulate(b, 1)+Apply and Step(b) end in different states", step)
		}
	}
}

// TestAccumulateStateAndEdges checks the rest of the contract: no sums on
// the device until the first Accumulate; Apply with an empty sum is an
// error; a NaN batch makes Apply change nothing (and report no update);
// State holds no sums, and a trainer restored from it with SetState goes
// on exactly as the original; a graph without every trainable
// parameter's gradient is refused; nothing leaks.
func TestAccumulateStateAndEdges(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 1))
	tg := mlp(t, rng)
	dev := &evalDevice{}
	r := newStepRig(t, dev, tg, stepCases()["adamw-iterative-abs-clip"])
	sums := func() int {
		n := 0
		for k := range r.dev.resident {
			if k.kind == ArgAccum {
				n++
			}
		}
		return n
	}
	if _, err := r.dev.Apply(update.StepInfo{Step: 1, LRScale: 1}); err == nil {
		t.Error("Apply before any Accumulate: no error")
	}
	r.step(t, update.StepInfo{Step: 1, LRScale: 1}, randBatch(rng))
	r.step(t, update.StepInfo{Step: 2, LRScale: 1}, randBatch(rng))
	if n := sums(); n != 0 {
		t.Fatalf("%d gradient sums on the device after Steps only", n)
	}
	live := dev.live
	r.accumulate(t, randBatch(rng), 0.5, true)
	if n := sums(); n != len(tg.Params) || dev.live != live+n {
		t.Fatalf("%d gradient sums, %d more live buffers after the first Accumulate; want %d", n, dev.live-live, len(tg.Params))
	}

	// A NaN batch: Apply skips the update and empties the sum.
	bad := randBatch(rng)
	bad[0].Float32s()[5] = float32(math.NaN())
	res, err := r.dev.Accumulate(tg, bad, 0.5, false)
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(float64(res.Loss)) {
		t.Fatalf("loss %g of a NaN batch", res.Loss)
	}
	r.host.accumulate(t, bad, 0.5, false) // adds nothing
	for name, want := range r.host.sum {
		got, err := r.dev.resident1(ArgAccum, name)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.Float32s(), want) {
			t.Fatalf("the gradient sum of %s changed by a batch with a NaN loss", name)
		}
	}
	before := mustState(t, r.dev)
	res, err = r.dev.Apply(update.StepInfo{Step: 3, LRScale: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.GradNorm != 0 || res.Selection != nil || res.Loss != 0 {
		t.Errorf("Apply after a NaN batch reports an update: %+v", res)
	}
	if !reflect.DeepEqual(mustState(t, r.dev), before) {
		t.Error("Apply after a NaN batch changed the state")
	}
	r.host.sum, r.host.held = nil, false
	if _, err := r.dev.Apply(update.StepInfo{Step: 3, LRScale: 1}); err == nil {
		t.Error("Apply after Apply: no error")
	}
	// The sum starts again without first.
	r.accumulate(t, randBatch(rng), 0.5, false)
	r.accumulate(t, randBatch(rng), 0.5, false)
	r.apply(t, update.StepInfo{Step: 3, LRScale: 1})

	// State holds parameters, slots and the selection only; a copy made
	// with SetState goes on as the original does.
	st := mustState(t, r.dev)
	for name, slots := range st.Optimizer {
		if len(slots) != 2 || slots[0].Name != "exp_avg" || slots[1].Name != "exp_avg_sq" {
			t.Errorf("%s: optimizer slots %v", name, slots)
		}
	}
	twin, err := newTrainer(dev, trainables(tg), r.prog)
	if err != nil {
		t.Fatal(err)
	}
	if err := twin.SetState(st); err != nil {
		t.Fatal(err)
	}
	for step := int64(4); step <= 5; step++ {
		info := update.StepInfo{Step: step, LRScale: 1}
		b1, b2 := randBatch(rng), randBatch(rng)
		r.accumulate(t, b1, 0.5, true)
		r.accumulate(t, b2, 0.5, false)
		r.apply(t, info)
		for i, b := range [][]*ir.Tensor{b1, b2} {
			if _, err := twin.Accumulate(tg, b, 0.5, i == 0); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := twin.Apply(info); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(mustState(t, twin), mustState(t, r.dev)) {
			t.Fatalf("step %d: the trainer restored with SetState differs from the original", step)
		}
	}
	twin.Close()

	// Accumulation needs every trainable parameter's gradient.
	extra := append(trainables(tg), &ir.Param{Name: "extra", Tensor: ir.FromFloat32s(ir.Shape{3}, []float32{1, 2, 3})})
	odd, err := newTrainer(dev, extra, &update.Program{Optimizer: adamWOpt()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := odd.Accumulate(tg, randBatch(rng), 1, true); err == nil || !strings.Contains(err.Error(), "trainable parameters") {
		t.Errorf("a graph without a trainable parameter's gradient: %v", err)
	}
	odd.Close()
	r.dev.Close()
	if dev.live != 0 {
		t.Errorf("%d device buffers leaked", dev.live)
	}
}
