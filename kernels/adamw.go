package kernels

import "sync"

// AdamW holds the float32 scalars of one step of torch.optim.AdamW as
// PyTorch 1.13 takes it on CPU (single-tensor path; amsgrad, maximize and
// capturable off). update.AdamW.Scalars derives them from the
// hyper-parameters and the step number in float64, as PyTorch's Python
// code does, rounding each once to float32 as its CPU kernels do when they
// take a Python number.
type AdamW struct {
	Decay               float32 // 1 − lr·weight_decay
	Beta1               float32
	OneMinusBeta1       float32
	Beta2               float32
	OneMinusBeta2       float32
	BiasCorrection2Sqrt float32 // sqrt(1 − β2^t)
	Eps                 float32
	NegStepSize         float32 // −lr / (1 − β1^t)
}

// adamwConstants are the scalars in the order the assembly reads them
// (asm/dst: cDecay ... cNegStepSize).
type adamwConstants [8]float32

const (
	awDecay = iota
	awBeta1
	awOneMinusBeta1
	awBeta2
	awOneMinusBeta2
	awBiasCorrection2Sqrt
	awEps
	awNegStepSize
)

func (h AdamW) constants() adamwConstants {
	return adamwConstants{
		awDecay:               h.Decay,
		awBeta1:               h.Beta1,
		awOneMinusBeta1:       h.OneMinusBeta1,
		awBeta2:               h.Beta2,
		awOneMinusBeta2:       h.OneMinusBeta2,
		awBiasCorrection2Sqrt: h.BiasCorrection2Sqrt,
		awEps:                 h.Eps,
		awNegStepSize:         h.NegStepSize,
	}
}

// AdamWStep takes one AdamW step in place. State layout: expAvg (exp_avg,
// the first moment m) and expAvgSq (exp_avg_sq, the second moment v) are
// float32 arrays of the parameter's length, zero before the first step;
// the step number is in h's bias corrections. Per entry, every operation
// rounded as PyTorch's vectorized CPU kernels round it (fma = one
// rounding):
//
//	p := param[i] * h.Decay                                          // param.mul_(1 - lr*wd)
//	m := fma(grad[i], h.OneMinusBeta1, expAvg[i]*h.Beta1)            // exp_avg.mul_(β1).add_(grad, alpha=1-β1)
//	v := fma(h.OneMinusBeta2*grad[i], grad[i], expAvgSq[i]*h.Beta2)  // exp_avg_sq.mul_(β2).addcmul_(grad, grad, value=1-β2)
//	den := sqrt(v)/h.BiasCorrection2Sqrt + h.Eps
//	param[i] = p + (h.NegStepSize*m)/den                             // param.addcdiv_(exp_avg, denom, value=-step_size)
//	expAvg[i], expAvgSq[i] = m, v
//
// threads <= 0 means DefaultThreads().
func AdamWStep(h AdamW, param, grad, expAvg, expAvgSq []float32, threads int) {
	checkAdamWArgs(param, grad, expAvg, expAvgSq, nil)
	adamw(h, param, grad, expAvg, expAvgSq, nil, distanceValue, nil, nil, threads)
}

// AdamWStepCount is AdamWStep fused with CountAbove: in the same pass it
// adds to counts[j] the number of entries whose new distance
// Δ(param[i], seed[i]) exceeds thresholds[j]. It reads param, grad, the
// state and seed once and writes param and the state once: pass 1 of a DST
// step.
func AdamWStepCount(h AdamW, param, grad, expAvg, expAvgSq, seed []float32, d Distance, thresholds []float32, counts []int64, threads int) {
	checkDistance(d)
	checkAdamWArgs(param, grad, expAvg, expAvgSq, seed)
	if len(counts) < len(thresholds) {
		panic("kernels: AdamWStepCount counts shorter than thresholds")
	}
	adamw(h, param, grad, expAvg, expAvgSq, seed, d, thresholds, counts, threads)
}

func checkAdamWArgs(param, grad, m, v, seed []float32) {
	n := len(param)
	if len(grad) != n || len(m) != n || len(v) != n || (seed != nil && len(seed) != n) {
		panic("kernels: AdamW slices differ in length")
	}
}

func adamw(h AdamW, param, grad, m, v, seed []float32, d Distance, thresholds []float32, counts []int64, threads int) {
	c := h.constants()
	ts := makeThresholdSet(thresholds)
	workers := workersFor(len(param), threads)
	var total countSet
	if workers == 1 {
		adamwBlock(&c, param, grad, m, v, seed, d, &ts, &total)
	} else {
		task := adamwTasks.Get().(*adamwTask)
		*task = adamwTask{c: c, ts: ts, p: param, g: grad, m: m, v: v, seed: seed, d: d, partial: task.partial}
		task.partial = append(task.partial[:0], make([]countSet, workers)...)
		Parallel(workers, task)
		for _, pc := range task.partial {
			for j := range total {
				total[j] += pc[j]
			}
		}
		*task = adamwTask{partial: task.partial}
		adamwTasks.Put(task)
	}
	for j := range thresholds {
		counts[j] += total[j]
	}
}

type adamwTask struct {
	c          adamwConstants
	ts         thresholdSet
	p, g, m, v []float32
	seed       []float32
	d          Distance
	partial    []countSet
}

var adamwTasks = sync.Pool{New: func() any { return new(adamwTask) }}

func (t *adamwTask) Run(w, workers int) {
	lo, hi := Split(len(t.p), w, workers, 64)
	var seed []float32
	if t.seed != nil {
		seed = t.seed[lo:hi]
	}
	t.partial[w] = countSet{}
	adamwBlock(&t.c, t.p[lo:hi], t.g[lo:hi], t.m[lo:hi], t.v[lo:hi], seed, t.d, &t.ts, &t.partial[w])
}

func adamwBlock(c *adamwConstants, p, g, m, v, seed []float32, d Distance, ts *thresholdSet, counts *countSet) {
	for len(p) > 0 {
		n := min(len(p), countChunk)
		var s []float32
		if seed != nil {
			s = seed[:n]
		}
		done := adamwVector(c, p[:n], g[:n], m[:n], v[:n], s, d, ts, counts)
		var rest []float32
		if s != nil {
			rest = s[done:]
		}
		adamwGeneric(c, p[done:n], g[done:n], m[done:n], v[done:n], rest, d, ts, counts)
		p, g, m, v = p[n:], g[n:], m[n:], v[n:]
		if seed != nil {
			seed = seed[n:]
		}
	}
}

// adamwGeneric is the reference step; the explicit float32 conversions keep
// the compiler from fusing products into sums that PyTorch rounds apart.
func adamwGeneric(c *adamwConstants, p, g, m, v, seed []float32, d Distance, ts *thresholdSet, counts *countSet) {
	g, m, v = g[:len(p)], m[:len(p)], v[:len(p)]
	for i := range p {
		pi := float32(p[i] * c[awDecay])
		mi := fma32(g[i], c[awOneMinusBeta1], float32(m[i]*c[awBeta1]))
		vi := fma32(float32(c[awOneMinusBeta2]*g[i]), g[i], float32(v[i]*c[awBeta2]))
		den := float32(float32(sqrt32(vi)/c[awBiasCorrection2Sqrt]) + c[awEps])
		pi = float32(pi + float32(float32(c[awNegStepSize]*mi)/den))
		p[i], m[i], v[i] = pi, mi, vi
		if d != distanceValue {
			countScore(counts, ts.q[:ts.used], score(pi, seed[i], d))
		}
	}
}
