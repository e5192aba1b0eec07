package cpu

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/update"
)

// trainParam is a trainable parameter as the update sees it.
type trainParam struct {
	name  string
	shape []int
	value []float32 // the parameter's storage, updated in place
	grad  []float32 // this step's gradient, during the update
	sum   []float32 // the accumulated gradient (Accumulate), when used
	seed  []float32 // Θ0, with a selection
	// seedShared: seed is update.Program.Seeds' storage, not a copy.
	seedShared bool
	slots      []update.Slot
	// scratch is Adafactor's: the row and column sums of one matrix and
	// the row and column scales of every matrix (the clipping needs them
	// all before the first matrix is updated).
	scratch []float32
}

// optimizer is an update.Optimizer lowered to package kernels' steps.
type optimizer interface {
	// step updates p.value from p.grad, reading and writing p.slots.
	step(p *trainParam, t update.StepInfo, threads int)
	// stepCount is step fused with a selection's counting pass: it also
	// adds to counts[j] how many entries of the new value have a distance
	// to p.seed above thresholds[j] (kernels.CountAbove), in the same pass.
	stepCount(p *trainParam, t update.StepInfo, d kernels.Distance, thresholds []float32, counts []int64, threads int)
}

func lowerOptimizer(o update.Optimizer) (optimizer, error) {
	if err := o.Check(); err != nil {
		return nil, err
	}
	switch {
	case o.SGD != nil:
		return sgdStep{*o.SGD}, nil
	case o.AdamW != nil:
		return adamwStep{*o.AdamW}, nil
	case o.Adafactor != nil:
		return adafactorStep{*o.Adafactor}, nil
	}
	return nil, fmt.Errorf("cpu: optimizer %q", o.Name)
}

// newParamState allocates a parameter's optimizer slots and scratch.
func newParamState(o update.Optimizer, p *trainParam) {
	p.slots = o.NewSlots(p.shape)
	if o.Adafactor != nil {
		l := update.LayoutOf(p.shape)
		p.scratch = make([]float32, (l.Rows+l.Cols)*(1+l.Stack))
	}
}

type sgdStep struct{ h update.SGD }

func (o sgdStep) buffer(p *trainParam) []float32 {
	if len(p.slots) > 0 {
		return p.slots[0].Data
	}
	return nil
}

func (o sgdStep) step(p *trainParam, t update.StepInfo, threads int) {
	kernels.SGDStep(kernels.SGD(o.h.Scalars(t)), p.value, p.grad, o.buffer(p), threads)
}

func (o sgdStep) stepCount(p *trainParam, t update.StepInfo, d kernels.Distance, thresholds []float32, counts []int64, threads int) {
	kernels.SGDStepCount(kernels.SGD(o.h.Scalars(t)), p.value, p.grad, o.buffer(p), p.seed, d, thresholds, counts, threads)
}

type adamwStep struct{ h update.AdamW }

func (o adamwStep) step(p *trainParam, t update.StepInfo, threads int) {
	kernels.AdamWStep(kernels.AdamW(o.h.Scalars(t)), p.value, p.grad, p.slots[0].Data, p.slots[1].Data, threads)
}

func (o adamwStep) stepCount(p *trainParam, t update.StepInfo, d kernels.Distance, thresholds []float32, counts []int64, threads int) {
	kernels.AdamWStepCount(kernels.AdamW(o.h.Scalars(t)), p.value, p.grad, p.slots[0].Data, p.slots[1].Data, p.seed, d, thresholds, counts, threads)
}

// adafactorStep computes the factors, the clipping's RMS(U) and the
// parameter RMS in float64 on the host, and the per-entry step with the
// kernels.
type adafactorStep struct{ h update.Adafactor }

func (o adafactorStep) step(p *trainParam, t update.StepInfo, threads int) {
	o.run(p, t, nil, 0, nil, nil, threads)
}

func (o adafactorStep) stepCount(p *trainParam, t update.StepInfo, d kernels.Distance, thresholds []float32, counts []int64, threads int) {
	if p.seed == nil {
		panic("cpu: Adafactor stepCount without a seed")
	}
	o.run(p, t, p.seed, d, thresholds, counts, threads)
}

// stepSize is α before the clipping: the base step (absolute or relative)
// times the schedule, times max(Eps2, RMS(param)) with ScaleParameter.
func stepSize(s update.AdafactorScalars, param []float32) float64 {
	alpha := s.Alpha
	if s.ScaleParameter {
		var sum float64
		for _, x := range param {
			sum += float64(x) * float64(x)
		}
		rms := 0.0
		if len(param) > 0 {
			rms = math.Sqrt(sum / float64(len(param)))
		}
		alpha *= max(s.Eps2, rms)
	}
	return alpha
}

func (o adafactorStep) run(p *trainParam, t update.StepInfo, seed []float32, d kernels.Distance, thresholds []float32, counts []int64, threads int) {
	param, grad := p.value, p.grad
	n := len(param)
	if len(grad) != n {
		panic("cpu: Adafactor param and grad lengths differ")
	}
	if n == 0 {
		return
	}
	s := o.h.Scalars(t)
	l := update.LayoutOf(p.shape)
	alpha := stepSize(s, param)
	eps1 := float32(s.Eps1)
	mat := l.Rows * l.Cols
	rowSums := p.scratch[:l.Rows]
	colSums := p.scratch[l.Rows : l.Rows+l.Cols]
	scales := p.scratch[l.Rows+l.Cols:]
	rowScales, colScales := scales[:l.Stack*l.Rows], scales[l.Stack*l.Rows:]
	var sumSq float64
	for k := range l.Stack {
		g := grad[k*mat : (k+1)*mat]
		rowScale, colScale := rowScales[k*l.Rows:(k+1)*l.Rows], colScales[k*l.Cols:(k+1)*l.Cols]
		kernels.AdafactorSquareSums(rowSums, colSums, g, l.Rows, l.Cols, eps1)
		if l.Factored {
			r := p.slots[0].Data[k*l.Rows : (k+1)*l.Rows]
			c := p.slots[1].Data[k*l.Cols : (k+1)*l.Cols]
			kernels.AdafactorUpdateFactors(r, rowSums, s.Beta2)
			kernels.AdafactorUpdateFactors(c, colSums, s.Beta2)
			kernels.AdafactorScales(rowScale, colScale, r, c)
		} else {
			v := p.slots[0].Data
			kernels.AdafactorUpdateFactors(v, colSums, s.Beta2)
			one := [1]float32{1}
			kernels.AdafactorScales(rowScale, colScale, one[:], v)
		}
		sumSq += kernels.AdafactorUpdateSquares(g, rowScale, colScale, l.Rows, l.Cols)
	}
	rmsU := math.Sqrt(sumSq / float64(n))
	scale := float32(alpha / max(1, rmsU/s.ClipThreshold))
	var expAvg []float32
	if s.Beta1 != 0 {
		expAvg = p.slots[len(p.slots)-1].Data // "exp_avg" comes last
	}
	for k := range l.Stack {
		lo, hi := k*mat, (k+1)*mat
		rowScale, colScale := rowScales[k*l.Rows:(k+1)*l.Rows], colScales[k*l.Cols:(k+1)*l.Cols]
		var m []float32
		if expAvg != nil {
			m = expAvg[lo:hi]
		}
		if seed == nil {
			kernels.AdafactorApply(param[lo:hi], grad[lo:hi], rowScale, colScale, l.Rows, l.Cols, scale, float32(s.Beta1), m, threads)
		} else {
			kernels.AdafactorApplyCount(param[lo:hi], grad[lo:hi], rowScale, colScale, l.Rows, l.Cols, scale, float32(s.Beta1), m,
				seed[lo:hi], d, thresholds, counts, threads)
		}
	}
}

// kernelDistance is a selection's distance as the kernels take it.
func kernelDistance(d update.Distance) (kernels.Distance, error) {
	switch d {
	case update.DistanceAbs:
		return kernels.DistanceAbs, nil
	case update.DistanceRel:
		return kernels.DistanceRel, nil
	case update.DistanceInvRel:
		return kernels.DistanceInvRel, nil
	}
	return 0, fmt.Errorf("cpu: unknown distance %v", d)
}

// The counting schedule of update.GridRun is the kernels' pass width.
const _ = uint(kernels.MaxThresholds-update.ThresholdsPerPass) + uint(update.ThresholdsPerPass-kernels.MaxThresholds)
