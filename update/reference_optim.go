package update

import "math"

// Reference takes optimizer step t on one parameter in float64, written
// from the papers' and PyTorch's documented update rules (not from any
// backend): param is updated in place from grad, and slots — the arrays
// of Slots(shape), in that order and layout, in float64 — are read and
// written. Backends agree with it to float32 rounding.
func (o Optimizer) Reference(shape []int, param, grad []float64, slots [][]float64, t StepInfo) {
	if len(param) != NumElements(shape) || len(grad) != len(param) {
		panic("update: Reference param and grad do not match the shape")
	}
	switch {
	case o.SGD != nil:
		o.SGD.reference(param, grad, slots, t)
	case o.AdamW != nil:
		o.AdamW.reference(param, grad, slots[0], slots[1], t)
	case o.Adafactor != nil:
		o.Adafactor.reference(shape, param, grad, slots, t)
	}
}

func (h SGD) reference(p, g []float64, slots [][]float64, t StepInfo) {
	lr := h.LR * t.LRScale
	var buf []float64
	if h.Momentum != 0 {
		buf = slots[0]
	}
	for i := range p {
		d := g[i] + h.WeightDecay*p[i]
		if h.Momentum != 0 {
			if t.Step == 1 {
				buf[i] = d
			} else {
				buf[i] = h.Momentum*buf[i] + (1-h.Dampening)*d
			}
			if h.Nesterov {
				d += h.Momentum * buf[i]
			} else {
				d = buf[i]
			}
		}
		p[i] -= lr * d
	}
}

func (h AdamW) reference(p, g, m, v []float64, t StepInfo) {
	lr := h.LR * t.LRScale
	bc1 := 1 - math.Pow(h.Beta1, float64(t.Step))
	bc2 := 1 - math.Pow(h.Beta2, float64(t.Step))
	for i := range p {
		p[i] *= 1 - lr*h.WeightDecay
		m[i] = h.Beta1*m[i] + (1-h.Beta1)*g[i]
		v[i] = h.Beta2*v[i] + (1-h.Beta2)*g[i]*g[i]
		p[i] -= lr / bc1 * m[i] / (math.Sqrt(v[i])/math.Sqrt(bc2) + h.Eps)
	}
}

// reference follows Shazeer & Stern's Algorithm 4 literally: row and
// column sums of G²+ε1 as exponential averages, V̂ = R Cᵀ / 1ᵀR, the
// update U = G/√V̂ clipped by max(1, RMS(U)/d), the relative step size.
func (h Adafactor) reference(shape []int, p, g []float64, slots [][]float64, t StepInfo) {
	n := len(p)
	beta2 := 1 - math.Pow(float64(t.Step), h.DecayRate)
	u := make([]float64, n)
	l := LayoutOf(shape)
	next := 0
	if l.Factored {
		rows, cols := l.Rows, l.Cols
		R, C := slots[0], slots[1]
		next = 2
		for k := range l.Stack {
			g := g[k*rows*cols:]
			R, C := R[k*rows:(k+1)*rows], C[k*cols:(k+1)*cols]
			for i := range rows {
				s := 0.0
				for j := range cols {
					s += g[i*cols+j]*g[i*cols+j] + h.Eps1
				}
				R[i] = beta2*R[i] + (1-beta2)*s
			}
			for j := range cols {
				s := 0.0
				for i := range rows {
					s += g[i*cols+j]*g[i*cols+j] + h.Eps1
				}
				C[j] = beta2*C[j] + (1-beta2)*s
			}
			sumR := 0.0
			for _, x := range R {
				sumR += x
			}
			for i := range rows {
				for j := range cols {
					vhat := R[i] * C[j] / sumR
					u[k*rows*cols+i*cols+j] = g[i*cols+j] / math.Sqrt(vhat)
				}
			}
		}
	} else {
		v := slots[0]
		next = 1
		for i := range n {
			v[i] = beta2*v[i] + (1-beta2)*(g[i]*g[i]+h.Eps1)
			u[i] = g[i] / math.Sqrt(v[i])
		}
	}
	rms := func(x []float64) float64 {
		s := 0.0
		for _, v := range x {
			s += v * v
		}
		return math.Sqrt(s / float64(len(x)))
	}
	alpha := h.alpha(t)
	if h.ScaleParameter {
		alpha *= max(h.Eps2, rms(p))
	}
	clip := max(1, rms(u)/h.ClipThreshold)
	for i := range n {
		step := alpha * u[i] / clip
		if h.Beta1 != 0 {
			m := slots[next]
			m[i] = h.Beta1*m[i] + (1-h.Beta1)*step
			step = m[i]
		}
		p[i] -= step
	}
}
