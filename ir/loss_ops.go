package ir

import (
	"fmt"
	"math"
)

// ---------------------------------------------------------------- SoftmaxCELoss

// SoftmaxCELoss is the mean softmax cross-entropy of logits over their
// last axis (the classes) against integer targets, skipping targets equal
// to IgnoreIndex, together with its gradient. Inputs: logits [..., C],
// targets [...] (int32 or int64, the logits' shape without the last axis)
// and, optionally, a denominator D (a float32 scalar). With rows r over
// the targets, lse[r] = log Σ_c exp(logits[r, c]) and N the number of rows
// whose target is not IgnoreIndex:
//
//	loss            = Σ_{r: t[r] ≠ IgnoreIndex} (lse[r] − logits[r, t[r]]) / N   (0 when N = 0)
//	dlogits[r, c]   = (exp(logits[r, c] − lse[r]) − [c = t[r]]) / N               (0 on ignored rows)
//
// With D, both divide by D instead of N (and are 0 when D = 0): the loss
// is this batch's share of a mean over more targets than its own, those
// of all the batches a gradient-accumulation step sums (WithLossDenominator),
// and its gradient is that share's, so that a batch's backward pass sees
// the very (p − y)/D of one batch holding them all.
//
// Outputs: loss (a scalar of the logits' dtype) and dlogits = ∂loss/∂logits
// (the logits' shape), computed in the same pass over the logits, so the
// backward pass of a training step starts from it without reading the
// logits again; backends skip dlogits when nobody reads it. A target
// outside [0, C) other than IgnoreIndex is an error at run time. Sums
// accumulate in float64.
type SoftmaxCELoss struct {
	IgnoreIndex int64
}

func (op *SoftmaxCELoss) Name() string { return "SoftmaxCELoss" }

func checkLogitsTargets(logits, targets Type) error {
	if !isFloat(logits.DType) || len(logits.Shape) < 1 {
		return fmt.Errorf("logits are %v, want a float tensor of rank ≥ 1", logits)
	}
	if err := wantDTypes("targets", targets, isIndex, "int32 or int64"); err != nil {
		return err
	}
	if want := logits.Shape[:len(logits.Shape)-1]; !targets.Shape.Equal(want) {
		return fmt.Errorf("targets have shape %v, want %v (the logits' shape %v without the class axis)", targets.Shape, want, logits.Shape)
	}
	return nil
}

func (op *SoftmaxCELoss) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 3); err != nil {
		return nil, err
	}
	if err := checkLogitsTargets(in[0], in[1]); err != nil {
		return nil, err
	}
	if d, ok := optional(in, 2); ok && (d.DType != Float32 || len(d.Shape) != 0) {
		return nil, fmt.Errorf("denominator is %v, want a float32 scalar", d)
	}
	return []Type{{in[0].DType, Shape{}}, in[0]}, nil
}

// crossEntropyRows checks every target and counts the ones not ignored.
func crossEntropyRows(targets *Tensor, classes int, ignore int64) (int, error) {
	n := 0
	for r := range targets.Len() {
		t := targets.Int64At(r)
		if t == ignore {
			continue
		}
		if t < 0 || t >= int64(classes) {
			return 0, fmt.Errorf("target %d at position %d out of range [0, %d) (ignore index %d)", t, r, classes, ignore)
		}
		n++
	}
	return n, nil
}

func (op *SoftmaxCELoss) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	logits, targets := in[0], in[1]
	c := logits.shape[len(logits.shape)-1]
	count, err := crossEntropyRows(targets, c, op.IgnoreIndex)
	if err != nil {
		return err
	}
	// div is what the loss and its gradient divide by: the count, or the
	// denominator input.
	div := float64(count)
	if d := optIn(in, 2); d != nil {
		div = d.Float64At(0)
	}
	x := Convert(logits, Float64).Float64s()
	grad := make([]float64, len(x))
	var sum float64
	for r := range targets.Len() {
		t := targets.Int64At(r)
		if t == op.IgnoreIndex {
			continue
		}
		row := x[r*c : (r+1)*c]
		m := math.Inf(-1)
		for _, v := range row {
			m = math.Max(m, v)
		}
		var s float64
		for _, v := range row {
			s += math.Exp(v - m)
		}
		lse := m + math.Log(s)
		sum += lse - row[t]
		if div == 0 {
			continue
		}
		for k, v := range row {
			grad[r*c+k] = math.Exp(v-lse) / div
		}
		grad[r*c+int(t)] -= 1 / div
	}
	loss := 0.0
	if div != 0 {
		loss = sum / div
	}
	storeFloats(out[0], []float64{loss})
	if len(out) > 1 && out[1] != nil {
		storeFloats(out[1], grad)
	}
	return nil
}

// ---------------------------------------------------------------- BCELoss

// bceLogFloor is where BCELoss clamps its logarithms and
// bceEps the smallest p·(1−p) its gradient divides by (PyTorch's BCELoss
// uses the same).
const (
	bceLogFloor = -100
	bceEps      = 1e-12
)

// BCELoss is the mean binary cross-entropy of probabilities p
// against targets t of the same shape (PyTorch's BCELoss):
//
//	loss = −mean(t·max(log p, −100) + (1 − t)·max(log(1 − p), −100))
//
// Output: the loss, a scalar of p's dtype.
type BCELoss struct{}

func (op *BCELoss) Name() string { return "BCELoss" }

func (op *BCELoss) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 2); err != nil {
		return nil, err
	}
	if err := sameFloat(in[0], in[1]); err != nil {
		return nil, err
	}
	return []Type{{in[0].DType, Shape{}}}, nil
}

func (op *BCELoss) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	p, t := Convert(in[0], Float64).Float64s(), Convert(in[1], Float64).Float64s()
	var sum float64
	for i := range p {
		sum += t[i]*math.Max(math.Log(p[i]), bceLogFloor) + (1-t[i])*math.Max(math.Log(1-p[i]), bceLogFloor)
	}
	storeFloats(out[0], []float64{-sum / float64(len(p))})
	return nil
}

// BCELossGrad is the gradient of BCELoss with
// respect to p. Inputs: dloss (scalar), p and t; with n elements
//
//	dp = dloss·(p − t) / max(p·(1 − p), 1e-12) / n
type BCELossGrad struct{}

func (op *BCELossGrad) Name() string { return "BCELossGrad" }

func (op *BCELossGrad) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 3, 3); err != nil {
		return nil, err
	}
	if err := sameFloat(in[1], in[2]); err != nil {
		return nil, err
	}
	if in[0].DType != in[1].DType || len(in[0].Shape) != 0 {
		return nil, fmt.Errorf("dloss is %v, want a %s scalar", in[0], in[1].DType)
	}
	return []Type{in[1]}, nil
}

func (op *BCELossGrad) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	dl := in[0].Float64At(0)
	p, t := Convert(in[1], Float64).Float64s(), Convert(in[2], Float64).Float64s()
	res := make([]float64, len(p))
	scale := dl / float64(len(p))
	for i := range p {
		res[i] = scale * (p[i] - t[i]) / math.Max(p[i]*(1-p[i]), bceEps)
	}
	storeFloats(out[0], res)
	return nil
}
