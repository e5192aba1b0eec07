package kernels

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
)

// bf16Path is one of Sbgemm's paths (see SbgemmPath) and the ISA cap that
// selects it.
type bf16Path struct {
	name string
	isa  ISA
}

// bf16Candidates are Sbgemm's paths, fastest first: the AVX512_BF16
// kernels, the float32 FMA kernels (the ISA capped at AVX2), the portable
// Go kernels (the generic ISA).
func bf16Candidates() []bf16Path {
	return []bf16Path{{"avx512bf16", HardwareISA()}, {"fma", min(HardwareISA(), AVX2)}, {"go", Generic}}
}

// has reports whether this CPU and build have the path.
func (p bf16Path) has() bool {
	defer SetMaxISA(p.isa)()
	return SbgemmPath() == p.name
}

// forBF16Paths runs f once per Sbgemm path this machine has, as a subtest
// named after it, skipping the others with the reason. fast is whether
// the path runs at assembly speed.
func forBF16Paths(t *testing.T, f func(t *testing.T, fast bool)) {
	t.Helper()
	for _, p := range bf16Candidates() {
		t.Run(p.name, func(t *testing.T) {
			if !p.has() {
				t.Skipf("this CPU and build have no %s path", p.name)
			}
			defer SetMaxISA(p.isa)()
			f(t, p.name != "go")
		})
	}
}

// sbgemmKC is the block of inner indices the bfloat16 kernels use now.
func sbgemmKC() int { return sbgemmKernelForISA().block.kc }

// bf16Tolerance is the documented bound on |C − C₀| (see Sbgemm) for the
// exact result C₀ from the unrounded inputs, with a margin of 2⁻⁶ of it for
// the terms of second order.
func bf16Tolerance(k, kc int, terms, scaledC float64) float64 {
	blocks := (k + kc - 1) / kc
	bound := (0x1p-7+0x1p-16)*terms + float64(k+2*blocks+1)*0x1p-24*(terms+scaledC)
	return bound*(1+0x1p-6) + 1e-37
}

// bf16SumTolerance bounds the difference from the exact result for the
// rounded inputs: float32 accumulation only (see Sgemm's tests).
func bf16SumTolerance(k, kc int, terms, scaledC float64) float64 {
	blocks := (k + kc - 1) / kc
	return float64(k+2*blocks+3)*0x1p-23*(terms+scaledC) + 1e-37
}

// nearestBF16 is the bfloat16 nearest to x by the definition (ties to the
// even significand), computed in float64 from the two candidates around x:
// an independent check of bf16Round for finite, normal x.
func nearestBF16(x float32) uint16 {
	bits := math.Float32bits(x)
	lo := bits &^ 0xffff
	hi := lo + 0x10000
	value := func(b uint32) float64 {
		if b&0x7fffffff == 0x7f800000 {
			return math.Copysign(0x1p128, float64(x)) // where rounding overflows to Inf
		}
		return float64(math.Float32frombits(b))
	}
	dlo, dhi := math.Abs(float64(x)-value(lo)), math.Abs(value(hi)-float64(x))
	if dlo < dhi || (dlo == dhi && lo&0x10000 == 0) {
		return uint16(lo >> 16)
	}
	return uint16(hi >> 16)
}

func TestBF16Round(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	check := func(x float32) {
		bits := math.Float32bits(x)
		got := bf16Round(x)
		var want uint16
		switch {
		case bits&0x7f800000 == 0:
			want = uint16(bits>>16) & 0x8000 // ±0 and denormals: signed zero
		case math.IsInf(float64(x), 0):
			want = uint16(bits >> 16)
		case math.IsNaN(float64(x)):
			if v := bf16Value(got); !math.IsNaN(float64(v)) || got&0x40 == 0 {
				t.Fatalf("bf16Round(%#x) = %#x, want a quiet NaN", bits, got)
			}
			return
		default:
			want = nearestBF16(x)
		}
		if got != want {
			t.Fatalf("bf16Round(%v = %#x) = %#x, want %#x", x, bits, got, want)
		}
	}
	for range 1 << 20 {
		check(math.Float32frombits(rng.Uint32()))
	}
	// Ties, values next to ties, the largest finite values, denormals.
	for _, base := range []uint32{0x3f800000, 0x3f810000, 0x00800000, 0x7f7e0000, 0x7f7f0000, 0x80000001, 0x807fffff, 0x7f800000, 0xff800000} {
		for d := -2; d <= 2; d++ {
			for _, off := range []uint32{0, 0x7fff, 0x8000, 0xffff} {
				check(math.Float32frombits(base + off + uint32(d)))
			}
		}
	}
	if got := bf16Value(bf16Round(math.MaxFloat32)); !math.IsInf(float64(got), 1) {
		t.Errorf("bf16Round(MaxFloat32) = %v, want +Inf", got)
	}
}

// TestBF16FMA checks the portable step against exact arithmetic: x·y+s
// rounded once (math/big), flushed below 2⁻¹²⁶.
func TestBF16FMA(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	randBF16 := func() float32 {
		// Exponents spread wide, so that sums cancel, overflow and
		// underflow.
		e := 1 + rng.IntN(253)
		bits := uint32(rng.IntN(2))<<31 | uint32(e)<<23 | uint32(rng.IntN(128))<<16
		return math.Float32frombits(bits)
	}
	for i := range 1 << 18 {
		x, y := randBF16(), randBF16()
		s := math.Float32frombits(rng.Uint32())
		if i%3 == 0 {
			s = float32(float64(x) * float64(y) * (rng.Float64()*4 - 2)) // comparable magnitudes: cancellation
		}
		if math.IsNaN(float64(s)) || math.IsInf(float64(s), 0) || math.Abs(float64(s)) < 0x1p-126 {
			continue
		}
		exact := new(big.Float).SetPrec(1000).SetFloat64(float64(x))
		exact.Mul(exact, new(big.Float).SetFloat64(float64(y)))
		exact.Add(exact, new(big.Float).SetFloat64(float64(s)))
		want, _ := exact.Float32()
		if math.Abs(float64(want)) < 0x1p-126 {
			want = float32(math.Copysign(0, float64(want)))
		}
		if got := bf16FMA(x, y, s); math.Float32bits(got) != math.Float32bits(want) && !(math.IsInf(float64(got), 0) && got == want) {
			t.Fatalf("bf16FMA(%v, %v, %v) = %v, want %v", x, y, s, got, want)
		}
	}
}

// TestSbgemmPackers checks each assembly packer against its Go loop, and
// the packer that uses them (slabs for transposed operands) against the
// Go-only one, on values around the rounding ties and special values (NaN,
// ±Inf, denormals), with strides wider than the blocks (some multiples of
// 1 KiB) and guard words after the output.
func TestSbgemmPackers(t *testing.T) {
	rng := rand.New(rand.NewPCG(35, 36))
	var p *sbgemmPacker
	for _, kern := range sbgemmKernels() {
		if pk := kern.pack.(*sbgemmPacker); pk.cvt != nil {
			p = pk
		}
	}
	if p == nil {
		t.Skip("no assembly packers on this CPU and build")
	}
	values := func(n int) []float32 {
		s := make([]float32, n)
		specials := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 1e-40, -3e-39, 0, float32(math.Copysign(0, -1)), math.MaxFloat32}
		for i := range s {
			switch rng.IntN(8) {
			case 0:
				s[i] = specials[rng.IntN(len(specials))]
			case 1: // a tie or next to one
				s[i] = math.Float32frombits(uint32(rng.IntN(1<<15))<<16 | 0x8000 + uint32(rng.IntN(3)) - 1)
			default:
				s[i] = float32(rng.NormFloat64())
			}
		}
		return s
	}
	guarded := func(n int) []uint32 {
		s := make([]uint32, n+guardWords)
		for i := range s {
			s[i] = guardBits
		}
		return s
	}
	type packer func(dst []uint32, ldd int, src []float32, lds int, rows, cols int)
	cases := []struct {
		name             string
		asm              packer
		rowStep, colStep int
		extent           func(rows, cols int) (srcRows, srcCols int) // of the source read
		goLoop           packer
	}{
		{"cvt", p.cvt, 1, 16, func(r, c int) (int, int) { return r, 2 * c }, func(dst []uint32, ldd int, src []float32, lds int, rows, cols int) {
			for r := range rows {
				cvtRowGo(dst[r*ldd:], src[r*lds:], 0, 2*cols)
			}
		}},
		{"pair", p.pair, 1, 16, func(r, c int) (int, int) { return 2 * r, c }, func(dst []uint32, ldd int, src []float32, lds int, rows, cols int) {
			pairRowsGo(dst, ldd, src, lds, 0, rows, 0, cols, 2*rows)
		}},
	}
	for _, cs := range cases {
		for _, rm := range []int{1, 2, 3} {
			for _, cm := range []int{1, 2, 5} {
				rows, cols := rm*cs.rowStep, cm*cs.colStep
				sr, sc := cs.extent(rows, cols)
				lds, ldd := sc+rng.IntN(9), cols+rng.IntN(9)
				src := values((sr-1)*lds + sc)
				want := make([]uint32, (rows-1)*ldd+cols)
				got := guarded(len(want))
				copy(want, got)
				cs.goLoop(want, ldd, src, lds, rows, cols)
				cs.asm(got[:len(want)], ldd, src, lds, rows, cols)
				comparePacked(t, fmt.Sprintf("%s %d×%d", cs.name, rows, cols), got, want)
			}
		}
	}
	for _, rows := range []int{16, 48} {
		for _, cols := range []int{16, 80} {
			lds, ldd := cols+rng.IntN(9), rows+rng.IntN(9)
			src := make([]uint32, (rows-1)*lds+cols)
			for i := range src {
				src[i] = rng.Uint32()
			}
			want := make([]uint32, (cols-1)*ldd+rows)
			got := guarded(len(want))
			copy(want, got)
			for i := range rows {
				for j := range cols {
					want[j*ldd+i] = src[i*lds+j]
				}
			}
			p.transpose(got[:len(want)], ldd, src, lds, rows, cols)
			comparePacked(t, fmt.Sprintf("transpose %d×%d", rows, cols), got, want)
		}
	}
	// Whole blocks and panels, every transpose, against the Go-only packer.
	portable := &sbgemmPacker{nr: p.nr}
	scratch := make([]uint32, p.scratchLen())
	for i := range 40 {
		mc, kc := 1+rng.IntN(120), 1+rng.IntN(150)
		lds := []int{kc, mc, 256, 1024}[i%4] + rng.IntN(2)*rng.IntN(20)
		lds = max(lds, kc, mc)
		src := values(max(kc, mc)*lds + lds)
		for _, trans := range []bool{false, true} {
			ldd := packedStride((kc + 1) / 2)
			want := make([]uint32, (mc-1)*ldd+(kc+1)/2)
			got := guarded(len(want))
			copy(want, got)
			portable.packA(want, ldd, nil, src, lds, trans, 0, mc, 0, kc)
			p.packA(got[:len(want)], ldd, scratch, src, lds, trans, 0, mc, 0, kc)
			comparePacked(t, fmt.Sprintf("packA trans=%v mc=%d kc=%d lda=%d", trans, mc, kc, lds), got, want)
			cols := min(p.nr, mc)
			want = make([]uint32, (kc+1)/2*p.nr)
			got = guarded(len(want))
			portable.packB(want, nil, src, lds, trans, 0, kc, 0, cols)
			p.packB(got[:len(want)], scratch, src, lds, trans, 0, kc, 0, cols)
			comparePacked(t, fmt.Sprintf("packB trans=%v kc=%d cols=%d ldb=%d", trans, kc, cols, lds), got, want)
		}
	}
}

// sbgemmWants are the two expectations of one product: within the
// documented bound of the exact result from the unrounded inputs, and
// within float32 rounding of the exact result from the rounded inputs
// (which pins the rounding down to bf16Round's).
type sbgemmWants struct{ bound, rounded gemmWant }

// TestSbgemmSmallExhaustive checks every m, n, k in 0..67 and all four
// transposes against the float64 references (see sbgemmWants), with guard
// words around and between the rows of C, leading dimensions larger than
// the widths, and NaN in C whenever beta is 0, on the assembly paths this
// CPU has (AVX512_BF16, FMA), which must give the same bits. The portable
// path, whose scalar emulation is slow, gets one transpose per shape in
// turn (all four with DSTUNE_GEMM_EXHAUSTIVE=1) and must give the same
// bits too, or, without an assembly path, is checked against the
// references itself.
func TestSbgemmSmallExhaustive(t *testing.T) {
	const maxDim = 67
	rng := rand.New(rand.NewPCG(37, 38))
	g := newGemmBase(rng, maxDim, maxDim, maxDim)
	roundedRef, roundedAbs := g.prefixSums(roundBF16)
	all := os.Getenv("DSTUNE_GEMM_EXHAUSTIVE") == "1"
	var fastPaths []bf16Path // the assembly paths
	for _, p := range bf16Candidates() {
		if p.name != "go" && p.has() {
			fastPaths = append(fastPaths, p)
		}
	}
	fast := len(fastPaths) > 0
	kc := sbgemmKC()
	var out gemmOut
	var fastC []float32
	wants := make([]sbgemmWants, len(alphaBetas))
	for k := 0; k <= maxDim; k++ {
		for i, ab := range alphaBetas {
			g.expectWith(&wants[i].bound, g.ref, g.abs, k, ab.alpha, ab.beta, func(k int, terms, scaledC float64) float64 {
				return bf16Tolerance(k, kc, terms, scaledC)
			})
			g.expectWith(&wants[i].rounded, roundedRef, roundedAbs, k, ab.alpha, ab.beta, func(k int, terms, scaledC float64) float64 {
				return bf16SumTolerance(k, kc, terms, scaledC)
			})
		}
		for m := 0; m <= maxDim; m++ {
			for n := 0; n <= maxDim; n++ {
				for ti, tc := range transCases {
					runPortable := all || ti == (m+n+k)%len(transCases)
					if !fast && !runPortable {
						continue
					}
					which := (m + 2*n + 3*k + ti) % len(alphaBetas)
					ab := alphaBetas[which]
					a, lda, b, ldb := g.operands(tc.transA, tc.transB)
					ldc := max(n, 1) + (m+k+ti)%3
					what := fmt.Sprintf("%s m=%d n=%d k=%d ldc=%d alpha=%v beta=%v", tc.name, m, n, k, ldc, ab.alpha, ab.beta)
					run := func(isa ISA) {
						defer SetMaxISA(isa)()
						out.reset(g, m, n, ldc, ab.beta == 0)
						Sbgemm(1, tc.transA, tc.transB, m, n, k, ab.alpha, a, lda, b, ldb, ab.beta, out.c, out.ldc)
					}
					check := func(path string) {
						if msg := out.check(g, &wants[which].bound); msg != "" {
							t.Fatalf("%s path: %s: against the exact result: %s", path, what, msg)
						}
						if msg := out.check(g, &wants[which].rounded); msg != "" {
							t.Fatalf("%s path: %s: against the exact result of the rounded inputs: %s", path, what, msg)
						}
					}
					for pi, p := range fastPaths {
						run(p.isa)
						check(p.name)
						if pi == 0 {
							fastC = append(fastC[:0], out.buf...)
						} else if i := firstBitDifference(out.buf, fastC); i >= 0 {
							t.Fatalf("%s: %s path: word %d of C's buffer = %v, the %s path gave %v", what, p.name, i, out.buf[i], fastPaths[0].name, fastC[i])
						}
					}
					if !runPortable {
						continue
					}
					run(Generic)
					if !fast {
						check("portable")
					} else if i := firstBitDifference(out.buf, fastC); i >= 0 {
						t.Fatalf("%s: portable path: word %d of C's buffer = %v, the %s path gave %v", what, i, out.buf[i], fastPaths[0].name, fastC[i])
					}
				}
			}
		}
	}
}

// firstBitDifference is the first index where got and want differ in their
// bits (any NaN matching any NaN), or -1.
func firstBitDifference(got, want []float32) int {
	for i := range want {
		g, w := got[i], want[i]
		if math.Float32bits(g) != math.Float32bits(w) && !(g != g && w != w) {
			return i
		}
	}
	return -1
}

// checkSbgemm compares C with the float64 result from the unrounded
// inputs within the documented bound.
func (g *gemmCase) checkSbgemm(t *testing.T, what string, kc int) {
	t.Helper()
	want, _ := refGemm(g.transA, g.transB, g.m, g.n, g.k, g.alpha, g.a, g.lda, g.b, g.ldb, g.beta, g.c0[guardWords:], g.ldc)
	_, terms := refGemm(g.transA, g.transB, g.m, g.n, g.k, g.alpha, g.a, g.lda, g.b, g.ldb, 0, nil, g.ldc)
	tol := make([]float64, len(want))
	for i := range tol {
		// refGemm's tol is (k+3)·2⁻²³·terms: undo that scaling.
		s := (terms[i] - 1e-37) / (float64(g.k+3) * 0x1p-23)
		scaledC := 0.0
		if g.beta != 0 {
			scaledC = math.Abs(float64(g.beta) * float64(g.c0[guardWords+i/max(g.n, 1)*g.ldc+i%max(g.n, 1)]))
		}
		tol[i] = bf16Tolerance(g.k, kc, s, scaledC)
	}
	checkGemm(t, what, g.m, g.n, g.c(), g.ldc, want, tol)
	for i, v := range g.cbuf {
		off := i - guardWords
		inC := off >= 0 && off < len(g.c()) && off%g.ldc < g.n
		if !inC && math.Float32bits(v) != guardBits {
			t.Fatalf("%s: word at C offset %d outside C overwritten with %v", what, off, v)
		}
	}
}

func (g *gemmCase) runSbgemm(threads int) {
	Sbgemm(threads, g.transA, g.transB, g.m, g.n, g.k, g.alpha, g.a, g.lda, g.b, g.ldb, g.beta, g.c(), g.ldc)
}

// TestSbgemmPathsAgree checks random shapes up to several blocks in every
// dimension (several blocks of inner indices: k up to 1300), all
// transposes, on 1, 2 and 3 threads and on every path: within the
// documented bound of the exact result, and the same bits everywhere.
func TestSbgemmPathsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(39, 40))
	var cases []*gemmCase
	dims := []int{1, 13, 15, 33, 100, 257, 300, 520}
	for i := range 12 {
		m, n, k := dims[rng.IntN(len(dims))], dims[rng.IntN(len(dims))], dims[rng.IntN(len(dims))]
		if i < 4 {
			m, n, k = 100+rng.IntN(300), 40+rng.IntN(200), 500+rng.IntN(800)
		}
		ab := alphaBetas[i%len(alphaBetas)]
		tc := transCases[i%len(transCases)]
		cases = append(cases, newGemmCase(rng, tc.transA, tc.transB, m, n, k, ab.alpha, ab.beta))
	}
	results := make([][]float32, len(cases))
	forBF16Paths(t, func(t *testing.T, fast bool) {
		for ci, g := range cases {
			if !fast && g.m*g.n*g.k > 1<<24 && testing.Short() {
				continue
			}
			for _, threads := range []int{1, 2, 3} {
				g.reset()
				g.runSbgemm(threads)
				what := fmt.Sprintf("%v threads=%d", g, threads)
				if threads == 1 {
					g.checkSbgemm(t, what, sbgemmKC())
				}
				if results[ci] == nil {
					results[ci] = slices.Clone(g.cbuf)
				} else if i := firstBitDifference(g.cbuf, results[ci]); i >= 0 {
					t.Fatalf("%s: word %d = %v, the first run gave %v", what, i, g.cbuf[i], results[ci][i])
				}
			}
		}
	})
}

// TestSbgemmTinyBlocking shrinks the cache blocks so that small shapes
// cross every loop level (several blocks of columns, inner indices and
// rows, odd inner lengths, the packers' Go edges), all transposes, on 1 to
// 3 threads and every path, which must agree bit for bit.
func TestSbgemmTinyBlocking(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	defer func(saved int) { minFlopsPerWorker = saved }(minFlopsPerWorker)
	minFlopsPerWorker = 1
	for _, blk := range [][3]int{{20, 2, 2}, {7, 1, 3}, {33, 3, 1}} {
		restore := withBlocking(blk[0], blk[1], blk[2])
		var cases []*gemmCase
		for i := range 30 {
			tc := transCases[i%len(transCases)]
			ab := alphaBetas[i%len(alphaBetas)]
			cases = append(cases, newGemmCase(rng, tc.transA, tc.transB, 1+rng.IntN(90), 1+rng.IntN(150), 1+rng.IntN(90), ab.alpha, ab.beta))
		}
		results := make([][]float32, len(cases))
		forBF16Paths(t, func(t *testing.T, fast bool) {
			for ci, g := range cases {
				for _, threads := range []int{1, 2, 3} {
					g.reset()
					g.runSbgemm(threads)
					what := fmt.Sprintf("blocking kc=%d mc=%d·mr nc=%d·nr %v threads=%d", 2*blk[0], blk[1], blk[2], g, threads)
					g.checkSbgemm(t, what, 2*blk[0])
					if results[ci] == nil {
						results[ci] = slices.Clone(g.cbuf)
					} else if i := firstBitDifference(g.cbuf, results[ci]); i >= 0 {
						t.Fatalf("%s: word %d = %v, the first run gave %v", what, i, g.cbuf[i], results[ci][i])
					}
				}
			}
		})
		restore()
	}
}

// TestSbgemmBatched checks batched products with gaps between them
// against one Sbgemm call per product (the same bits), with more and fewer
// products than threads, on every path, and the stacked layouts as
// TestSgemmBatched does.
func TestSbgemmBatched(t *testing.T) {
	rng := rand.New(rand.NewPCG(43, 44))
	defer func(saved int) { minFlopsPerWorker = saved }(minFlopsPerWorker)
	minFlopsPerWorker = 1
	forBF16Paths(t, func(t *testing.T, fast bool) {
		for _, layout := range []string{"separate", "stacked", "stacked contiguous"} {
			for i, sh := range [][4]int{{3, 17, 9, 5}, {5, 40, 33, 21}, {1, 128, 64, 96}, {7, 1, 1, 1}, {4, 64, 128, 33}, {24, 16, 70, 41}} {
				g := newBatchedCase(rng, layout, i, sh)
				tc, ab, batch, m, n, k := g.tc, g.ab, g.batch, g.m, g.n, g.k
				lda, ldb, ldc, strideA, strideB, strideC := g.lda, g.ldb, g.ldc, g.strideA, g.strideB, g.strideC
				a, b, c0 := g.a, g.b, g.c0
				want := slices.Clone(c0)
				for p := range batch {
					Sbgemm(1, tc.transA, tc.transB, m, n, k, ab.alpha, a[p*strideA:], lda, b[p*strideB:], ldb, ab.beta, want[p*strideC:], ldc)
				}
				for _, threads := range []int{1, 2, 3, 8} {
					got := slices.Clone(c0)
					SbgemmBatched(threads, tc.transA, tc.transB, m, n, k, ab.alpha, a, lda, strideA, b, ldb, strideB, ab.beta, got, ldc, strideC, batch)
					if j := firstBitDifference(got, want); j >= 0 {
						t.Fatalf("%s batch×m×n×k=%v layout=%s threads=%d: word %d = %v, want %v (per-product Sbgemm)", tc.name, sh, layout, threads, j, got[j], want[j])
					}
				}
			}
		}
	})
}

// TestSbgemmSpecialValues puts NaN and ±Inf into A and B (they propagate as
// in the float64 reference) and checks that denormal inputs, and products
// and sums below 2⁻¹²⁶, are flushed to zero on every path, while a result
// scaled below 2⁻¹²⁶ by alpha is not.
func TestSbgemmSpecialValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(45, 46))
	specials := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.Copysign(0, -1))}
	forBF16Paths(t, func(t *testing.T, fast bool) {
		for i := range 24 {
			tc := transCases[i%len(transCases)]
			g := newGemmCase(rng, tc.transA, tc.transB, 1+rng.IntN(40), 1+rng.IntN(70), 1+rng.IntN(40), 1, 0)
			for range 1 + rng.IntN(3) {
				g.a[rng.IntN(len(g.a))] = specials[rng.IntN(len(specials))]
				g.b[rng.IntN(len(g.b))] = specials[rng.IntN(len(specials))]
			}
			g.reset()
			g.runSbgemm(1)
			g.checkSbgemm(t, "specials "+g.String(), sbgemmKC())
		}
		for _, tc := range []struct {
			name           string
			scaleA, scaleB float32
		}{
			{"denormal inputs", 1e-39, 1},       // A flushed to zero
			{"denormal products", 1e-20, 1e-20}, // every product about 1e-40: flushed
		} {
			g := newGemmCase(rng, false, true, 20, 37, 29, 1, 0)
			for j := range g.a {
				g.a[j] *= tc.scaleA
			}
			for j := range g.b {
				g.b[j] *= tc.scaleB
			}
			g.reset()
			g.runSbgemm(1)
			for j, v := range g.c() {
				if j%g.ldc < g.n && v != 0 {
					t.Fatalf("%s: C word %d = %v, want 0 (flushed)", tc.name, j, v)
				}
			}
		}
		// Sums about 1e-20 (normal) scaled by alpha = 1e-20 into C: the
		// results are denormal and kept, as Go computes alpha·s.
		g := newGemmCase(rng, false, false, 9, 21, 17, 1e-20, 0)
		for j := range g.a {
			g.a[j] *= 1e-20
		}
		g.reset()
		g.runSbgemm(1)
		want := make([]float32, len(g.cbuf))
		copy(want, g.cbuf)
		sbgemmOneByOne(g, want[guardWords:])
		denormals := 0
		for j, v := range g.c() {
			if j%g.ldc >= g.n {
				continue
			}
			if w := want[guardWords+j]; math.Float32bits(v) != math.Float32bits(w) {
				t.Fatalf("alpha-scaled denormals: C word %d = %v, want %v", j, v, w)
			}
			if v != 0 && math.Abs(float64(v)) < 0x1p-126 {
				denormals++
			}
		}
		if denormals == 0 {
			t.Fatal("alpha-scaled denormals: the case produced no denormal results")
		}
		// The caller's floating-point environment is intact: Go's own
		// arithmetic still produces denormals.
		tiny := float32(0x1p-100)
		if x := tiny * float32(0x1p-30) * float32(len(g.c())%2+1); x == 0 {
			t.Fatal("after Sbgemm, 2⁻¹⁰⁰·2⁻³⁰ = 0: the kernel left flush-to-zero on")
		}
	})
}

// sbgemmOneByOne computes g's product into c the way Sbgemm's doc comment
// spells it out, one element at a time with bf16Dot (one block of inner
// indices: g.k must not exceed it).
func sbgemmOneByOne(g *gemmCase, c []float32) {
	at := func(x []float32, ld int, trans bool, i, p int) float32 {
		if trans {
			return x[p*ld+i]
		}
		return x[i*ld+p]
	}
	for i := range g.m {
		for j := range g.n {
			var s float32
			for p := 0; p < g.k; p += 2 {
				var a1, b1 float32
				if p+1 < g.k {
					a1, b1 = at(g.a, g.lda, g.transA, i, p+1), at(g.b, g.ldb, !g.transB, j, p+1)
				}
				s = bf16Dot(s, bf16Pair(at(g.a, g.lda, g.transA, i, p), a1), bf16Pair(at(g.b, g.ldb, !g.transB, j, p), b1))
			}
			t := g.alpha * s
			if g.beta == 0 {
				c[i*g.ldc+j] = t
			} else {
				c[i*g.ldc+j] = fma32(g.beta, c[i*g.ldc+j], t)
			}
		}
	}
}

// TestSbgemmWidePacker checks the float32 layout of Sbgemm's FMA path
// against its definition: every element rounded to bfloat16, the inner
// indices of each pair swapped, an odd last index paired with 0 (which
// comes first), for blocks of A and panels of B, plain and transposed, at
// offsets into the source (rows, columns and an even first inner index, as
// the engine's blocks start), on special values and random strides, into
// buffers holding stale NaNs, with the assembly helpers where the CPU has
// them and with Go.
func TestSbgemmWidePacker(t *testing.T) {
	rng := rand.New(rand.NewPCG(49, 50))
	kerns := sbgemmWideKernels()
	if len(kerns) == 0 {
		t.Skip("this build has no FMA path for Sbgemm")
	}
	specials := []float32{float32(math.NaN()), float32(math.Inf(1)), 1e-40, -3e-39, float32(math.Copysign(0, -1)), math.MaxFloat32}
	stale := func(n int) []float32 {
		x := make([]float32, n)
		for j := range x {
			x[j] = float32(math.NaN())
		}
		return x
	}
	for _, kern := range kerns {
		p := kern.pack.(*sbgemmWidePacker)
		goOnly := &sbgemmWidePacker{fp32: p.fp32}
		nr := kern.nr
		for i := range 80 {
			mc, kc := 1+rng.IntN(40), 1+rng.IntN(70)
			i0, pc, j0 := rng.IntN(3)*rng.IntN(9), 2*rng.IntN(2)*rng.IntN(9), rng.IntN(3)*rng.IntN(9)
			if i < 20 {
				i0, pc, j0 = 0, 0, 0
			}
			rows := max(i0+mc, j0+nr) // rows of op(X) the cases read
			ld := max(rows, pc+kc) + rng.IntN(30)
			src := make([]float32, max(rows, pc+kc)*ld)
			for j := range src {
				if rng.IntN(10) == 0 {
					src[j] = specials[rng.IntN(len(specials))]
				} else {
					src[j] = math.Float32frombits(uint32(rng.IntN(1<<15))<<16|0x8000+uint32(rng.IntN(3))-1) * float32(1-2*rng.IntN(2))
				}
			}
			trans := i%2 == 1
			op := func(r, q int) float32 { // op(X)(r, q): row r, inner index q
				if trans {
					return src[q*ld+r]
				}
				return src[r*ld+q]
			}
			want := func(r, e int) float32 { // element e of the packed row of op(X)'s row r
				q := e ^ 1
				if q >= kc {
					return 0
				}
				return roundBF16(op(r, pc+q))
			}
			ke := roundUp(kc, 2)
			ldd := packedStride(ke)
			what := fmt.Sprintf("%s trans=%v mc=%d kc=%d i0=%d pc=%d j0=%d", kern.name, trans, mc, kc, i0, pc, j0)
			for _, pk := range []*sbgemmWidePacker{p, goOnly} {
				dst := stale((mc-1)*ldd + ke)
				pk.packA(dst, ldd, nil, src, ld, trans, i0, mc, pc, kc)
				for r := range mc {
					for e := range ke {
						if got, w := dst[r*ldd+e], want(i0+r, e); math.Float32bits(got) != math.Float32bits(w) && !(got != got && w != w) {
							t.Fatalf("packA %s (asm=%v): row %d element %d = %v, want %v", what, pk.swapPairs != nil, r, e, got, w)
						}
					}
				}
				// op(B)(q, j) = op(X)(j, q) with the transpose flipped.
				cols := min(nr, mc)
				panel := stale(ke * nr) // the pad row and the columns past cols must be zeroed
				pk.packB(panel, nil, src, ld, !trans, pc, kc, j0, cols)
				for e := range ke {
					for j := range nr {
						w := float32(0)
						if j < cols {
							w = want(j0+j, e)
						}
						if got := panel[e*nr+j]; math.Float32bits(got) != math.Float32bits(w) && !(got != got && w != w) {
							t.Fatalf("packB %s cols=%d (asm=%v): element (%d, %d) = %v, want %v", what, cols, pk.swapRows != nil, e, j, got, w)
						}
					}
				}
			}
		}
	}
}

// TestSbgemmGenericReference checks the plain reference loop itself
// against float64 with the documented bound.
func TestSbgemmGenericReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(47, 48))
	for i := range 40 {
		tc := transCases[i%len(transCases)]
		ab := alphaBetas[i%len(alphaBetas)]
		g := newGemmCase(rng, tc.transA, tc.transB, rng.IntN(30), rng.IntN(30), rng.IntN(600), ab.alpha, ab.beta)
		g.reset()
		sbgemmGeneric(g.transA, g.transB, g.m, g.n, g.k, g.alpha, g.a, g.lda, g.b, g.ldb, g.beta, g.c(), g.ldc)
		g.checkSbgemm(t, "sbgemmGeneric "+g.String(), max(g.k, 1))
	}
}

// FuzzSbgemm compares the dispatched path with the portable one (the same
// bits) and both with the float64 reference (the documented bound) on
// fuzzed shapes (up to 70 in each dimension), transposes, alpha, beta,
// leading dimensions, thread counts and sprinkled special values.
func FuzzSbgemm(f *testing.F) {
	f.Add(uint8(5), uint8(7), uint8(3), uint8(0), float32(1), float32(0), uint64(1))
	f.Add(uint8(15), uint8(33), uint8(17), uint8(0x1f), float32(-0.5), float32(2), uint64(2))
	f.Add(uint8(70), uint8(1), uint8(64), uint8(0xa6), float32(3), float32(-1), uint64(3))
	f.Fuzz(func(t *testing.T, m8, n8, k8, flags uint8, alpha, beta float32, seed uint64) {
		m, n, k := int(m8)%71, int(n8)%71, int(k8)%71
		transA, transB := flags&1 != 0, flags&2 != 0
		threads := 1 + int(flags>>2)&1
		specials := int(flags>>3) & 3
		if math.IsNaN(float64(alpha)) || math.IsInf(float64(alpha), 0) || math.Abs(float64(alpha)) > 1e6 || alpha == 0 {
			alpha = 1
		}
		if math.IsNaN(float64(beta)) || math.IsInf(float64(beta), 0) || math.Abs(float64(beta)) > 1e6 {
			beta = 0
		}
		rng := rand.New(rand.NewPCG(seed, 49))
		g := newGemmCase(rng, transA, transB, m, n, k, alpha, beta)
		for range specials {
			vals := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))}
			if len(g.a) > 0 {
				g.a[rng.IntN(len(g.a))] = vals[rng.IntN(len(vals))]
			}
			if len(g.b) > 0 {
				g.b[rng.IntN(len(g.b))] = vals[rng.IntN(len(vals))]
			}
		}
		var first []float32
		forBF16Paths(t, func(t *testing.T, fast bool) {
			g.reset()
			g.runSbgemm(threads)
			g.checkSbgemm(t, g.String(), sbgemmKC())
			if first == nil {
				first = slices.Clone(g.cbuf)
			} else if i := firstBitDifference(g.cbuf, first); i >= 0 {
				t.Fatalf("%v: word %d = %v, the other path gave %v", g, i, g.cbuf[i], first[i])
			}
		})
	})
}

// TestSbgemmNoAllocs checks that calls after the first reuse the pooled
// pack buffers.
func TestSbgemmNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's bookkeeping allocates")
	}
	rng := rand.New(rand.NewPCG(50, 51))
	const m, n, k = 300, 200, 280
	a, b, c := randomSlice(rng, m*k), randomSlice(rng, k*n), make([]float32, m*n)
	for _, threads := range []int{1, 2} {
		for _, tc := range transCases {
			lda, ldb := k, n
			if tc.transA {
				lda = m
			}
			if tc.transB {
				ldb = k
			}
			call := func() { Sbgemm(threads, tc.transA, tc.transB, m, n, k, 1, a, lda, b, ldb, 0, c, n) }
			if allocs := testing.AllocsPerRun(3, call); allocs != 0 {
				t.Errorf("Sbgemm %s threads=%d: %v allocations a call", tc.name, threads, allocs)
			}
		}
		batched := func() {
			SbgemmBatched(threads, false, true, 50, 40, 30, 1, a, 30, 1500, b, 30, 1200, 0, c, 40, 2000, 4)
		}
		if allocs := testing.AllocsPerRun(3, batched); allocs != 0 {
			t.Errorf("SbgemmBatched threads=%d: %v allocations a call", threads, allocs)
		}
	}
}

// TestSbgemmAccuracy checks the documented error bound on long inner
// dimensions (up to 4096, eight blocks) on every path, and that the
// rounding to bfloat16 really happens: the largest error is well above
// what float32 sums of the unrounded inputs would show (random roundings
// partly cancel, so it is about 2⁻⁸/√k of S rather than the bound).
func TestSbgemmAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(52, 53))
	for _, k := range []int{1, 100, 1000, 4096} {
		g := newGemmCase(rng, false, false, 24, 40, k, 1, 0)
		forBF16Paths(t, func(t *testing.T, fast bool) {
			if !fast && testing.Short() && k > 1000 {
				t.Skip("the portable path is slow; skipped in -short")
			}
			g.reset()
			g.runSbgemm(1)
			g.checkSbgemm(t, g.String(), sbgemmKC())
			want, _ := refGemm(false, false, g.m, g.n, g.k, 1, g.a, g.lda, g.b, g.ldb, 0, nil, g.ldc)
			worst := 0.0 // the largest |C − C₀| / S
			for i := range g.m {
				for j := range g.n {
					s := 0.0
					for p := range k {
						s += math.Abs(float64(g.a[i*g.lda+p]) * float64(g.b[p*g.ldb+j]))
					}
					worst = max(worst, math.Abs(float64(g.c()[i*g.ldc+j])-want[i*g.n+j])/s)
				}
			}
			t.Logf("k=%d: largest error %.3g·S (bound %.3g·S, bfloat16 accumulation would allow about %.3g·S)",
				k, worst, 0x1p-7+0x1p-16+float64(k+2*((k+sbgemmKC()-1)/sbgemmKC())+1)*0x1p-24, float64(k)*0x1p-8)
			if k >= 100 && worst < 16*math.Sqrt(float64(k))*0x1p-24 {
				t.Errorf("k=%d: largest error %.3g·S: are the inputs rounded to bfloat16 at all?", k, worst)
			}
		})
	}
}
