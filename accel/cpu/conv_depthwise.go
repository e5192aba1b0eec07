package cpu

import "github.com/dstune/dstune/kernels"

// A depthwise convolution (one input channel a group) sums only the K
// products of each output: computed directly, without columns, whose
// product would be one row a channel. The sums run an output row at a
// time, each kernel position's run (convRun) an axpy or a dot product of
// elements a stride apart. Images and groups are split over the workers
// (groups alone for the weights' gradient, which sums over the images in
// order), each computed exactly as by one worker.

type depthwiseKind int

const (
	depthwiseForward    depthwiseKind = iota // y = conv(x, w) + b
	depthwiseGradInput                       // x = dx from y = dy and w
	depthwiseGradWeight                      // w = dw from y = dy and x
)

// depthwiseTask is one depthwise kernel: y is the output or its gradient,
// x the input or its gradient, w the weights or their gradient, b the
// bias or nil.
type depthwiseTask struct {
	g          *convGeom
	kind       depthwiseKind
	y, w, x, b []float32
}

func (t *depthwiseTask) units() int {
	if t.kind == depthwiseGradWeight {
		return t.g.op.Group
	}
	return t.g.n * t.g.op.Group
}

func (t *depthwiseTask) run() {
	kernels.Parallel(min(t.g.workers, t.units()), t)
}

func (t *depthwiseTask) Run(worker, workers int) {
	g := t.g
	lo, hi := kernels.Split(t.units(), worker, workers, 1)
	wk := &g.wk[worker]
	wSize := g.mg * g.kSize
	for u := lo; u < hi; u++ {
		if t.kind == depthwiseGradWeight {
			grp := u
			dw := t.w[grp*wSize : (grp+1)*wSize]
			clear(dw)
			for n := range g.n {
				dy := t.y[(n*g.m+grp*g.mg)*g.outSize : (n*g.m+(grp+1)*g.mg)*g.outSize]
				x := t.x[(n*g.c+grp)*g.inSize : (n*g.c+grp+1)*g.inSize]
				g.depthwiseGradWeight(dw, dy, x, wk)
			}
			continue
		}
		n, grp := u/g.op.Group, u%g.op.Group
		y := t.y[(n*g.m+grp*g.mg)*g.outSize : (n*g.m+(grp+1)*g.mg)*g.outSize]
		x := t.x[(n*g.c+grp)*g.inSize : (n*g.c+grp+1)*g.inSize]
		w := t.w[grp*wSize : (grp+1)*wSize]
		if t.kind == depthwiseGradInput {
			clear(x)
			g.depthwiseGradInput(x, w, y, wk)
			continue
		}
		for oc := range g.mg {
			row := y[oc*g.outSize : (oc+1)*g.outSize]
			if t.b == nil {
				clear(row)
				continue
			}
			b := t.b[grp*g.mg+oc]
			for i := range row {
				row[i] = b
			}
		}
		g.depthwise(y, w, x, wk)
	}
}

// rowRuns are output row row's runs from kernel position k0 on, one a
// kernel position: all of them from the table, or as many as the
// worker's buffer holds, computed into it.
func (g *convGeom) rowRuns(row, k0 int, wk *convWorker) []convRun {
	if g.dwRuns != nil {
		return g.dwRuns[row*g.kSize+k0 : (row+1)*g.kSize]
	}
	start := g.rowStart(row, wk.pos)
	runs := wk.runs[:min(len(wk.runs), g.kSize-k0)]
	for j := range runs {
		runs[j] = g.run(wk.pos, k0+j, start, start, start+g.ow)
	}
	return runs
}

// eachRun calls f with every kernel position kp and its run r, an output
// row at a time (the rows' runs in blocks of the worker's table).
func (g *convGeom) eachRun(wk *convWorker, f func(kp int, r convRun)) {
	for row := range g.outSize / g.ow {
		for k0 := 0; k0 < g.kSize; {
			runs := g.rowRuns(row, k0, wk)
			for j, r := range runs {
				f(k0+j, r)
			}
			k0 += len(runs)
		}
	}
}

// depthwise adds to y [mg][outSize] the products of w [mg][K] and the
// windows of x [inSize], an output row at a time.
func (g *convGeom) depthwise(y, w, x []float32, wk *convWorker) {
	g.eachRun(wk, func(kp int, r convRun) {
		for oc := range g.mg {
			axpyGather(y[oc*g.outSize+r.va:oc*g.outSize+r.vb], w[oc*g.kSize+kp], x, r.x0, g.stride, wk.tmp)
		}
	})
}

// depthwiseGradInput adds to dx [inSize] the gradient from dy [mg][outSize]
// through w [mg][K].
func (g *convGeom) depthwiseGradInput(dx, w, dy []float32, wk *convWorker) {
	g.eachRun(wk, func(kp int, r convRun) {
		for oc := range g.mg {
			axpyScatter(dx, r.x0, g.stride, w[oc*g.kSize+kp], dy[oc*g.outSize+r.va:oc*g.outSize+r.vb], wk.tmp)
		}
	})
}

// depthwiseGradWeight adds to dw [mg][K] the gradient from dy [mg][outSize]
// and x [inSize].
func (g *convGeom) depthwiseGradWeight(dw, dy, x []float32, wk *convWorker) {
	g.eachRun(wk, func(kp int, r convRun) {
		for oc := range g.mg {
			dw[oc*g.kSize+kp] += dotGather(dy[oc*g.outSize+r.va:oc*g.outSize+r.vb], x, r.x0, g.stride)
		}
	})
}

// axpyGather adds a·src[x0 + j·stride] to dst[j]; tmp holds len(dst).
// A contiguous run from shortRun on goes through the vector kernels (a
// product into tmp, then a sum: the same roundings as the loop).
func axpyGather(dst []float32, a float32, src []float32, x0, stride int, tmp []float32) {
	if len(dst) == 0 {
		return
	}
	if stride == 1 {
		s := src[x0 : x0+len(dst)]
		if len(dst) >= shortRun {
			p := tmp[:len(dst)]
			kernels.ScaleF32(p, a, s)
			kernels.AddF32(dst, dst, p)
			return
		}
		for j := range dst {
			dst[j] += a * s[j]
		}
		return
	}
	s := src[x0 : x0+(len(dst)-1)*stride+1]
	for j := range dst {
		dst[j] += a * s[j*stride]
	}
}

// axpyScatter adds a·src[j] to dst[x0 + j·stride]; tmp holds len(src).
func axpyScatter(dst []float32, x0, stride int, a float32, src []float32, tmp []float32) {
	if len(src) == 0 {
		return
	}
	if stride == 1 {
		d := dst[x0 : x0+len(src)]
		if len(src) >= shortRun {
			p := tmp[:len(src)]
			kernels.ScaleF32(p, a, src)
			kernels.AddF32(d, d, p)
			return
		}
		for j, v := range src {
			d[j] += a * v
		}
		return
	}
	d := dst[x0 : x0+(len(src)-1)*stride+1]
	for j, v := range src {
		d[j*stride] += a * v
	}
}

// dotGather is the sum of a[j]·src[x0 + j·stride], in four interleaved
// partial sums (a fixed order).
func dotGather(a, src []float32, x0, stride int) float32 {
	if len(a) == 0 {
		return 0
	}
	var s0, s1, s2, s3 float32
	if stride == 1 {
		b := src[x0 : x0+len(a)]
		j := 0
		for ; j+4 <= len(a); j += 4 {
			s0 += a[j] * b[j]
			s1 += a[j+1] * b[j+1]
			s2 += a[j+2] * b[j+2]
			s3 += a[j+3] * b[j+3]
		}
		for ; j < len(a); j++ {
			s0 += a[j] * b[j]
		}
		return (s0 + s1) + (s2 + s3)
	}
	b := src[x0 : x0+(len(a)-1)*stride+1]
	for j, v := range a {
		s0 += v * b[j*stride]
	}
	return s0
}
