package tpu

import (
	"errors"
	"fmt"
	"math"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// Gradient accumulation runs two kinds of program instead of the step:
// per training graph an accumulate program (the forward and backward
// pass, then each gradient times the batch's weight added to a
// device-resident sum), and once per trainer an apply program (the
// update program alone, reading the sums as its gradients). The sums are
// ArgAccum buffers, made at the first Accumulate, so that training
// without accumulation holds none.

// Accumulation-scalar layout: the float32 vector an accumulate program
// is fed every run.
const (
	accWeight = iota // the batch's weight
	accFirst         // ≠ 0: the sum starts from this batch
	numAccScalars
)

// accResultPrefix names an accumulate program's new sums ("acc:NAME").
const accResultPrefix = "acc:"

// LowerAccumulate lowers tg's forward and backward pass followed by
// gradient accumulation: for every trainable parameter NAME (one with a
// gradient output "grad:NAME") the new sum is base + weight·grad:NAME,
// where base is 0 when first is set and the sum otherwise; a non-finite
// loss adds nothing (the new sum is base).
//
// Arguments, in order: trainable parameters, frozen parameters (all read
// only), the sums (ArgAccum "NAME", aliased to results "acc:NAME"), the
// accumulation scalars (weight, first), then tg's inputs. Results: the
// new sums, then "loss".
func LowerAccumulate(tg *ir.Graph) (*Program, error) {
	tr, err := splitTraining(tg)
	if err != nil {
		return nil, err
	}
	s := newStepLowering(nil)
	f := s.f
	for _, p := range tr.trainable {
		s.vals[p.Value] = s.arg(ArgParam, p.Name, p.Value.Type, "")
	}
	if err := s.declareFrozen(tr.frozen); err != nil {
		return nil, err
	}
	sums := map[string]value{}
	for _, p := range tr.trainable {
		sums[p.Name] = s.arg(ArgAccum, p.Name, p.Value.Type, accResultPrefix+p.Name)
	}
	scalars := s.arg(ArgStepScalars, "accumulate", ir.Type{DType: ir.Float32, Shape: ir.Shape{numAccScalars}}, "")
	if err := s.declareInputs(tg); err != nil {
		return nil, err
	}
	l := &graphLowering{f: f, vals: s.vals}
	if err := l.lowerNodes(tg); err != nil {
		return nil, err
	}
	loss, err := l.get(tr.loss)
	if err != nil {
		return nil, err
	}
	loss = f.reshape(loss, ir.Shape{})
	weight := scalarAt(f, scalars, accWeight)
	first := f.compare("NE", scalarAt(f, scalars, accFirst), f.scalarConst(ir.Float32, 0))
	finite := isFinite(f, loss)
	for _, p := range tr.trainable {
		g, err := l.get(tr.grads[p.Name])
		if err != nil {
			return nil, err
		}
		sum := sums[p.Name]
		base := f.selectOp(first, f.splat(sum.t, 0), sum)
		added := f.add(base, f.mul(g, f.broadcastTo(weight, g.shape())))
		s.result(accResultPrefix+p.Name, f.selectOp(finite, added, base))
	}
	s.result(ResultLoss, loss)
	if err := f.Err(); err != nil {
		return nil, fmt.Errorf("tpu: accumulation: %w", err)
	}
	return s.program(nil)
}

// LowerApply lowers the update program alone for the trainable
// parameters params (float32; their Tensors give the shapes): it reads
// every parameter's gradient from its sum (ArgAccum "NAME", read only:
// the trainer counts the sum empty afterwards) and runs the update
// LowerTrainStep runs — the gradients' norm, their clipping, the
// optimizer, DST — unconditionally (the trainer does not apply a sum that
// a non-finite loss went into).
//
// Arguments, in order: trainable parameters (aliased to their updated
// results), optimizer and DST state as LowerTrainStep's, the sums, then
// the step scalars. Results: the updated parameters and state, then
// "grad_norm" and, with DST, the per-silo metrics.
func LowerApply(params []*ir.Param, prog *update.Program) (*Program, error) {
	if err := prog.Optimizer.Check(); err != nil {
		return nil, fmt.Errorf("tpu: %w", err)
	}
	if len(params) == 0 {
		return nil, errors.New("tpu: an update needs a trainable parameter")
	}
	ps := make([]trained, len(params))
	seen := map[string]bool{}
	for i, p := range params {
		if p.Tensor.DType() != ir.Float32 {
			return nil, fmt.Errorf("tpu: %w: parameter %q is %s; training needs float32", ir.ErrNotSupported, p.Name, p.Tensor.DType())
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("tpu: parameter %q is listed twice", p.Name)
		}
		seen[p.Name] = true
		ps[i] = trained{p.Name, p.Tensor.Shape().Clone()}
	}
	s := newStepLowering(prog)
	a := &stepArgs{params: s.declareParams(ps)}
	if err := s.declareState(ps, a); err != nil {
		return nil, err
	}
	grads := map[string]value{}
	for _, p := range ps {
		grads[p.name] = s.arg(ArgAccum, p.name, ir.Type{DType: ir.Float32, Shape: p.shape}, "")
	}
	a.scalars = s.arg(ArgStepScalars, "step", ir.Type{DType: ir.Float32, Shape: ir.Shape{numStepScalars}}, "")
	u, err := s.update(ps, grads, a)
	if err != nil {
		return nil, err
	}
	s.updateResults(ps, a, u, func(v, _ value) value { return v })
	s.result(ResultGradNorm, u.norm)
	for _, r := range u.dst.results {
		s.result(r.name, r.v)
	}
	if err := s.f.Err(); err != nil {
		return nil, fmt.Errorf("tpu: apply results: %w", err)
	}
	return s.program(a.layout)
}

// scalarAt emits entry i of a vector of scalars as a scalar.
func scalarAt(f *fn, v value, i int) value {
	return f.reshape(f.slice(v, []int{i}, []int{i + 1}, []int{1}), ir.Shape{})
}

// accumulation is where the trainer's gradient sum stands.
type accumulation struct {
	made bool // the sums (ArgAccum buffers) are on the device
	// held: an Accumulate ran since the last Apply (otherwise the sum is
	// empty, whatever the buffers hold, and the next Accumulate starts it).
	held bool
	// nonFinite: a batch of the sum had a non-finite loss; Apply skips
	// the update, as Step does for such a batch.
	nonFinite bool
}

// Accumulate runs tg's accumulate program (compiled the first time) on
// one batch: it adds weight × the batch's gradients to the trainer's sum
// on the device, or — with first, or when the sum is empty (no Accumulate
// since the last Apply) — starts the sum from them. A batch whose loss is
// not finite adds nothing and makes the next Apply skip its update. The
// first Accumulate puts the sums on the device (one float32 buffer per
// trainable parameter, kept until Close). tg's gradients must be those of
// every trainable parameter of the trainer.
func (t *Trainer) Accumulate(tg *ir.Graph, inputs []*ir.Tensor, weight float32, first bool) (*update.Result, error) {
	if t.closed {
		return nil, errors.New("tpu: trainer is closed")
	}
	tp, err := t.accumulateProgram(tg)
	if err != nil {
		return nil, err
	}
	if err := checkInputs(tp.prog, inputs); err != nil {
		return nil, err
	}
	start := first || !t.acc.held
	sc := make([]float32, numAccScalars)
	sc[accWeight] = weight
	if start {
		sc[accFirst] = 1
	}
	out, err := t.run(tp, inputs, ir.FromFloat32s(ir.Shape{numAccScalars}, sc))
	if err != nil {
		return nil, err
	}
	defer t.freeAll(out)
	loss, err := t.result1(tp.prog, out, ResultLoss)
	if err != nil {
		return nil, err
	}
	res := &update.Result{Loss: loss.Float32s()[0]}
	if start {
		t.acc.held, t.acc.nonFinite = true, false
	}
	if l := float64(res.Loss); math.IsNaN(l) || math.IsInf(l, 0) {
		t.acc.nonFinite = true
	}
	return res, nil
}

// accumulateProgram returns tg's accumulate program, lowered and compiled
// the first time (when the trainer's sums are put on the device, if they
// are not yet).
func (t *Trainer) accumulateProgram(tg *ir.Graph) (trainProgram, error) {
	if tp, ok := t.accums[tg]; ok {
		return tp, nil
	}
	prog, err := LowerAccumulate(tg)
	if err != nil {
		return trainProgram{}, err
	}
	// Apply updates every trainable parameter from its sum: the graph
	// must give each of them a gradient (bind checks names and shapes).
	n := 0
	for _, a := range prog.Args {
		if a.Kind == ArgAccum {
			n++
		}
	}
	if n != len(t.params) {
		return trainProgram{}, fmt.Errorf("tpu: gradient accumulation needs a gradient of each of the trainer's %d trainable parameters; the graph has %d", len(t.params), n)
	}
	if err := t.makeSums(); err != nil {
		return trainProgram{}, err
	}
	tp, err := t.compile(prog, tg)
	if err != nil {
		return trainProgram{}, err
	}
	t.accums[tg] = tp
	return tp, nil
}

// makeSums puts the gradient sums on the device (zeros), the first time.
func (t *Trainer) makeSums() error {
	if t.acc.made {
		return nil
	}
	for _, p := range t.params {
		key := residentKey{ArgAccum, p.Name}
		typ := ir.Type{DType: ir.Float32, Shape: t.shapes[p.Name]}
		buf, err := t.dev.upload(ir.NewTensor(typ.DType, typ.Shape))
		if err != nil {
			return fmt.Errorf("tpu: gradient sum of %q: %w", p.Name, err)
		}
		t.resident[key], t.types[key] = buf, typ
	}
	t.acc.made = true
	return nil
}

// Apply runs the update of step info.Step from the gradient sum, as Step
// runs it from one batch's gradients (the apply program: the norm,
// clipping, the optimizer, DST), and empties the sum. When a batch of the
// sum had a non-finite loss it leaves every parameter and all state
// unchanged, as Step does (Result.GradNorm 0, Selection nil). Result.Loss
// is 0. Apply with an empty sum is an error.
func (t *Trainer) Apply(info update.StepInfo) (*update.Result, error) {
	if t.closed {
		return nil, errors.New("tpu: trainer is closed")
	}
	if !t.acc.held {
		return nil, errors.New("tpu: Apply with an empty gradient sum (no Accumulate since the last Apply)")
	}
	scalars, err := StepScalars(&t.prog, info)
	if err != nil {
		return nil, err
	}
	if t.acc.nonFinite {
		t.acc.held, t.acc.nonFinite = false, false
		return &update.Result{}, nil
	}
	tp, err := t.applyProgram()
	if err != nil {
		return nil, err
	}
	out, err := t.run(tp, nil, ir.FromFloat32s(ir.Shape{len(scalars)}, scalars))
	if err != nil {
		return nil, err
	}
	defer t.freeAll(out)
	t.acc.held = false
	return t.stepResult(tp.prog, out)
}

// applyProgram returns the trainer's apply program, lowered and compiled
// the first time.
func (t *Trainer) applyProgram() (trainProgram, error) {
	if t.apply != nil {
		return *t.apply, nil
	}
	prog, err := LowerApply(t.params, &t.prog)
	if err != nil {
		return trainProgram{}, err
	}
	tp, err := t.compile(prog, nil)
	if err != nil {
		return trainProgram{}, err
	}
	t.apply = &tp
	return tp, nil
}
