package kernels

import "sync"

// SGD holds the scalars of one step of torch.optim.SGD as PyTorch 1.13
// takes it on CPU (single-tensor path, maximize off), as
// update.SGD.Scalars derives them: the float32 hyper-parameters, whether
// weight decay and momentum are on (tested on the float64 values), and
// whether this is the first step, when the momentum buffer starts as the
// gradient instead of decaying (PyTorch's "buffer is None").
type SGD struct {
	WeightDecay, Momentum, OneMinusDampening, NegLR float32
	HasWeightDecay, HasMomentum, Nesterov, First    bool
}

// SGDStep takes one SGD step in place. State layout: momentumBuf
// (momentum_buffer) is a float32 array of the parameter's length, used only
// when h.HasMomentum (it may be nil otherwise). Per entry, fma rounding
// once as PyTorch's vectorized add with alpha does:
//
//	d := grad[i]
//	if h.HasWeightDecay { d = fma(param[i], h.WeightDecay, d) }  // d_p.add(param, alpha=wd)
//	if h.HasMomentum {
//		if h.First { buf[i] = d } else { buf[i] = fma(d, h.OneMinusDampening, buf[i]*h.Momentum) }
//		if h.Nesterov { d = fma(buf[i], h.Momentum, d) } else { d = buf[i] }
//	}
//	param[i] = fma(d, h.NegLR, param[i])                            // param.add_(d_p, alpha=-lr)
func SGDStep(h SGD, param, grad, momentumBuf []float32, threads int) {
	checkSGDArgs(h, param, grad, momentumBuf, nil)
	sgd(h, param, grad, momentumBuf, nil, distanceValue, nil, nil, threads)
}

// SGDStepCount is SGDStep fused with CountAbove on the new parameters (as
// AdamWStepCount): the step and the counting run block by block, so the
// counting reads what the step just wrote from cache.
func SGDStepCount(h SGD, param, grad, momentumBuf, seed []float32, d Distance, thresholds []float32, counts []int64, threads int) {
	checkDistance(d)
	checkSGDArgs(h, param, grad, momentumBuf, seed)
	if len(counts) < len(thresholds) {
		panic("kernels: SGDStepCount counts shorter than thresholds")
	}
	sgd(h, param, grad, momentumBuf, seed, d, thresholds, counts, threads)
}

func checkSGDArgs(h SGD, param, grad, buf, seed []float32) {
	n := len(param)
	if len(grad) != n || (h.HasMomentum && len(buf) != n) || (seed != nil && len(seed) != n) {
		panic("kernels: SGD slices differ in length")
	}
}

type sgdConstants struct {
	wd, momentum, oneMinusDampening, negLR float32
	hasWD, hasMomentum, nesterov, first    bool
}

func (h SGD) constants() sgdConstants {
	return sgdConstants{
		wd: h.WeightDecay, momentum: h.Momentum, oneMinusDampening: h.OneMinusDampening, negLR: h.NegLR,
		hasWD: h.HasWeightDecay, hasMomentum: h.HasMomentum, nesterov: h.Nesterov, first: h.First,
	}
}

func sgd(h SGD, param, grad, buf, seed []float32, d Distance, thresholds []float32, counts []int64, threads int) {
	task := sgdTasks.Get().(*sgdTask)
	*task = sgdTask{c: h.constants(), ts: makeThresholdSet(thresholds), p: param, g: grad, buf: buf, seed: seed, d: d, partial: task.partial}
	workers := workersFor(len(param), threads)
	task.partial = append(task.partial[:0], make([]countSet, workers)...)
	Parallel(workers, task)
	var total countSet
	for _, pc := range task.partial {
		for j := range total {
			total[j] += pc[j]
		}
	}
	*task = sgdTask{partial: task.partial}
	sgdTasks.Put(task)
	for j := range thresholds {
		counts[j] += total[j]
	}
}

type sgdTask struct {
	c         sgdConstants
	ts        thresholdSet
	p, g, buf []float32
	seed      []float32
	d         Distance
	partial   []countSet
}

var sgdTasks = sync.Pool{New: func() any { return new(sgdTask) }}

// fusedBlock is how many entries an optimizer step handles before counting
// them, so that the counting pass reads them from L1/L2.
const fusedBlock = 4096

func (t *sgdTask) Run(w, workers int) {
	lo, hi := Split(len(t.p), w, workers, 64)
	t.partial[w] = countSet{}
	for ; lo < hi; lo += fusedBlock {
		end := min(hi, lo+fusedBlock)
		var buf []float32
		if t.c.hasMomentum {
			buf = t.buf[lo:end]
		}
		done := sgdVector(&t.c, t.p[lo:end], t.g[lo:end], buf)
		if buf != nil {
			buf = buf[done:]
		}
		sgdGeneric(&t.c, t.p[lo+done:end], t.g[lo+done:end], buf)
		if t.d != distanceValue {
			countBlock(&t.partial[w], &t.ts, t.p[lo:end], t.seed[lo:end], t.d)
		}
	}
}

func sgdGeneric(c *sgdConstants, p, g, buf []float32) {
	g = g[:len(p)]
	if c.hasMomentum {
		buf = buf[:len(p)]
	}
	for i := range p {
		d := g[i]
		if c.hasWD {
			d = fma32(p[i], c.wd, d)
		}
		if c.hasMomentum {
			if c.first {
				buf[i] = d
			} else {
				buf[i] = fma32(d, c.oneMinusDampening, float32(buf[i]*c.momentum))
			}
			if c.nesterov {
				d = fma32(buf[i], c.momentum, d)
			} else {
				d = buf[i]
			}
		}
		p[i] = fma32(d, c.negLR, p[i])
	}
}
