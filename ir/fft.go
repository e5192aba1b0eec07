package ir

import (
	"math"
	"math/bits"
)

// fftPlan computes complex discrete Fourier transforms of one length n in
// float64,
//
//	X[k] = Σ_t x[t]·exp(∓2πi·k·t/n)   (− forward, + inverse; no 1/n)
//
// by an iterative radix-2 FFT when n is a power of two, directly when n
// is small, and otherwise by Bluestein's algorithm (the transform as a
// convolution with a chirp, done by power-of-two FFTs), so every length
// costs O(n log n). Angles are reduced modulo a full turn in integers
// before the sine and cosine, so large n lose no accuracy there.
type fftPlan struct {
	n int
	// cos and sin of 2πj/n for j < n (direct) or j < n/2 (radix 2).
	cos, sin []float64
	// Bluestein: the chirp w[t] = exp(−πi·t²/n), the transform of the
	// filter conj(w) laid out circularly, and the inner power-of-two plan.
	chirpRe, chirpIm []float64
	filtRe, filtIm   []float64
	inner            *fftPlan
	// scratch of the inner length
	bufRe, bufIm []float64
}

// fftDirectMax is the largest length transformed directly (O(n²)) when it
// is not a power of two.
const fftDirectMax = 64

func newFFTPlan(n int) *fftPlan {
	p := &fftPlan{n: n}
	switch {
	case n <= 1:
	case n&(n-1) == 0:
		p.cos, p.sin = turnTable(n, n/2)
	case n <= fftDirectMax:
		p.cos, p.sin = turnTable(n, n)
	default:
		m := 1 << bits.Len(uint(2*n-2))
		p.inner = newFFTPlan(m)
		p.chirpRe, p.chirpIm = make([]float64, n), make([]float64, n)
		for t := range n {
			// t² mod 2n keeps the angle π·t²/n in [0, 2π) exactly.
			j := int((uint64(t) * uint64(t)) % uint64(2*n))
			a := math.Pi * float64(j) / float64(n)
			p.chirpRe[t], p.chirpIm[t] = math.Cos(a), -math.Sin(a)
		}
		p.filtRe, p.filtIm = make([]float64, m), make([]float64, m)
		for t := range n {
			p.filtRe[t], p.filtIm[t] = p.chirpRe[t], -p.chirpIm[t]
			if t > 0 {
				p.filtRe[m-t], p.filtIm[m-t] = p.chirpRe[t], -p.chirpIm[t]
			}
		}
		p.inner.transform(p.filtRe, p.filtIm, false)
		p.bufRe, p.bufIm = make([]float64, m), make([]float64, m)
	}
	return p
}

// turnTable returns cos and sin of 2πj/n for j < count.
func turnTable(n, count int) (cos, sin []float64) {
	cos, sin = make([]float64, count), make([]float64, count)
	for j := range count {
		a := 2 * math.Pi * float64(j) / float64(n)
		cos[j], sin[j] = math.Cos(a), math.Sin(a)
	}
	return cos, sin
}

// transform replaces (re, im), of length n, by its transform.
func (p *fftPlan) transform(re, im []float64, inverse bool) {
	if inverse {
		// The inverse transform is the conjugate of the forward
		// transform of the conjugate.
		for i := range im {
			im[i] = -im[i]
		}
		p.transform(re, im, false)
		for i := range im {
			im[i] = -im[i]
		}
		return
	}
	switch {
	case p.n <= 1:
	case p.inner != nil:
		p.bluestein(re, im)
	case p.n&(p.n-1) == 0:
		p.radix2(re, im)
	default:
		p.direct(re, im)
	}
}

func (p *fftPlan) direct(re, im []float64) {
	n := p.n
	outRe, outIm := make([]float64, n), make([]float64, n)
	for k := range n {
		var sr, si float64
		j := 0 // k·t mod n
		for t := range n {
			c, s := p.cos[j], p.sin[j]
			sr += re[t]*c + im[t]*s
			si += im[t]*c - re[t]*s
			if j += k; j >= n {
				j -= n
			}
		}
		outRe[k], outIm[k] = sr, si
	}
	copy(re, outRe)
	copy(im, outIm)
}

func (p *fftPlan) radix2(re, im []float64) {
	n := p.n
	shift := 64 - uint(bits.Len(uint(n))-1)
	for i := range n {
		j := int(bits.Reverse64(uint64(i)) >> shift)
		if j > i {
			re[i], re[j] = re[j], re[i]
			im[i], im[j] = im[j], im[i]
		}
	}
	for size := 2; size <= n; size <<= 1 {
		half, step := size/2, n/size
		for start := 0; start < n; start += size {
			for k := range half {
				c, s := p.cos[k*step], p.sin[k*step]
				a, b := start+k, start+k+half
				tr := re[b]*c + im[b]*s
				ti := im[b]*c - re[b]*s
				re[b], im[b] = re[a]-tr, im[a]-ti
				re[a], im[a] = re[a]+tr, im[a]+ti
			}
		}
	}
}

func (p *fftPlan) bluestein(re, im []float64) {
	n, m := p.n, len(p.bufRe)
	ar, ai := p.bufRe, p.bufIm
	for t := range n {
		ar[t] = re[t]*p.chirpRe[t] - im[t]*p.chirpIm[t]
		ai[t] = re[t]*p.chirpIm[t] + im[t]*p.chirpRe[t]
	}
	for t := n; t < m; t++ {
		ar[t], ai[t] = 0, 0
	}
	p.inner.transform(ar, ai, false)
	for k := range m {
		r := ar[k]*p.filtRe[k] - ai[k]*p.filtIm[k]
		ai[k] = ar[k]*p.filtIm[k] + ai[k]*p.filtRe[k]
		ar[k] = r
	}
	p.inner.transform(ar, ai, true)
	inv := 1 / float64(m)
	for k := range n {
		cr, ci := ar[k]*inv, ai[k]*inv
		re[k] = cr*p.chirpRe[k] - ci*p.chirpIm[k]
		im[k] = cr*p.chirpIm[k] + ci*p.chirpRe[k]
	}
}
