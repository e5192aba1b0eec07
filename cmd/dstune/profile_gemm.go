package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/dstune/dstune/kernels"
)

func init() {
	measurePeakGFLOPS = kernels.MeasurePeakGFLOPS
	registerProfiler(profiler{name: "gemm", run: profileGemm})
}

// gemmProfileShape is one product `dstune profile gemm` measures: C is M×N,
// the inner dimension K; batch > 0 makes it a batched product.
type gemmProfileShape struct {
	batch          int
	m, n, k        int
	transA, transB bool
}

// gemmProfileShapes are the products of training a BERT-base-sized layer on
// 2048 tokens: the forward projections (NN), their input gradients dX =
// dY·Wᵀ (NT, (M,K,N)) and weight gradients dW = Xᵀ·dY (TN, (K,N,M)); two
// squares; and attention's batched products for 64 heads×sequences of 128
// with head size 64 (scores Q·Kᵀ, weighted sum P·V). quick shrinks them.
func gemmProfileShapes(quick bool) []gemmProfileShape {
	tokens, hidden, ff, seq, dh, heads := 2048, 768, 3072, 128, 64, 64
	if quick {
		tokens, hidden, ff, seq, dh, heads = 64, 48, 96, 32, 16, 4
	}
	var out []gemmProfileShape
	for _, f := range [][3]int{{tokens, hidden, hidden}, {tokens, ff, hidden}, {tokens, hidden, ff}} {
		m, n, k := f[0], f[1], f[2]
		out = append(out,
			gemmProfileShape{m: m, n: n, k: k},
			gemmProfileShape{m: m, n: k, k: n, transB: true},
			gemmProfileShape{m: k, n: n, k: m, transA: true})
	}
	sq := 512
	if quick {
		sq = 40
	}
	out = append(out, gemmProfileShape{m: sq, n: sq, k: sq}, gemmProfileShape{m: 2 * sq, n: 2 * sq, k: 2 * sq})
	return append(out,
		gemmProfileShape{batch: heads, m: seq, n: seq, k: dh, transB: true},
		gemmProfileShape{batch: heads, m: seq, n: dh, k: seq})
}

func (s gemmProfileShape) trans() string {
	t := []byte("NN")
	if s.transA {
		t[0] = 'T'
	}
	if s.transB {
		t[1] = 'T'
	}
	return string(t)
}

// gemmPrecision is one kind of GEMM profileGemm measures: the kernels to
// call and the peak their throughput is a fraction of.
type gemmPrecision struct {
	name         string // as --precision spells it
	kernel       string // the record's kernel name; batched adds "-batched"
	gemm         func(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
	batched      func(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda, strideA int, b []float32, ldb, strideB int, beta float32, c []float32, ldc, strideC int, batch int)
	peak         func(env *profileEnv) float64
	vsFP32       bool // report the GFLOP/s relative to the float32 kernel's
	measuredPeak float64
	measuredOnce bool
}

func gemmPrecisions(which string) []*gemmPrecision {
	fp32 := &gemmPrecision{name: "fp32", kernel: "sgemm", gemm: kernels.Sgemm, batched: kernels.SgemmBatched,
		peak: func(env *profileEnv) float64 { return env.peakGFLOPS() }}
	bf16 := &gemmPrecision{name: "bf16", kernel: "sbgemm", gemm: kernels.Sbgemm, batched: kernels.SbgemmBatched,
		peak: func(env *profileEnv) float64 {
			if kernels.BF16PeakIsFMAPeak() {
				// The same loop: one measurement, so that both precisions'
				// lines are shares of one peak.
				return env.peakGFLOPS()
			}
			return kernels.MeasurePeakBF16GFLOPS(env.threads)
		}}
	switch which {
	case "bf16":
		return []*gemmPrecision{bf16}
	case "all":
		bf16.vsFP32 = true
		return []*gemmPrecision{fp32, bf16}
	}
	return []*gemmPrecision{fp32}
}

// profileGemm times each shape's call (the median of enough repetitions
// for about half a second, at least 5) in each precision --precision
// names, one after the other on the same operands, and reports it against
// the peak of that precision measured on the spot: the FMA loop for
// float32, the bfloat16 dot-product loop (VDPBF16PS) for bfloat16 (the FMA
// loop where Sbgemm runs on the float32 kernels, see
// kernels.MeasurePeakBF16GFLOPS). gbps
// counts the compulsory traffic: A and B read once, C written once (all
// float32 in memory).
func profileGemm(env *profileEnv) ([]profileRecord, error) {
	rng := rand.New(rand.NewPCG(1, 1))
	precisions := gemmPrecisions(env.precision)
	peakBW := env.peakGBPS()
	var recs []profileRecord
	for _, s := range gemmProfileShapes(env.quick) {
		batch := max(s.batch, 1)
		lda, ldb := s.k, s.n
		if s.transA {
			lda = s.m
		}
		if s.transB {
			ldb = s.k
		}
		a := gemmRandomFloats(rng, batch*s.m*s.k)
		b := gemmRandomFloats(rng, batch*s.k*s.n)
		c := make([]float32, batch*s.m*s.n)
		fp32GFLOPS := 0.0
		for _, p := range precisions {
			if !p.measuredOnce {
				p.measuredPeak, p.measuredOnce = p.peak(env), true
			}
			call := func() {
				if s.batch > 0 {
					p.batched(env.threads, s.transA, s.transB, s.m, s.n, s.k, 1, a, lda, s.m*s.k, b, ldb, s.k*s.n, 0, c, s.n, s.m*s.n, s.batch)
					return
				}
				p.gemm(env.threads, s.transA, s.transB, s.m, s.n, s.k, 1, a, lda, b, ldb, 0, c, s.n)
			}
			secs := gemmMedianSeconds(call, env.quick)
			flops := 2 * float64(batch) * float64(s.m) * float64(s.n) * float64(s.k)
			bytes := 4 * float64(batch) * float64(s.m*s.k+s.k*s.n+s.m*s.n)
			rec := profileRecord{
				Kernel:     p.kernel,
				Shape:      fmt.Sprintf("%dx%dx%d", s.m, s.n, s.k),
				Trans:      s.trans(),
				Threads:    env.threads,
				ISA:        env.isa.String(),
				MS:         secs * 1e3,
				GFLOPS:     flops / secs / 1e9,
				GBPS:       bytes / secs / 1e9,
				PeakGFLOPS: p.measuredPeak,
				PeakGBPS:   peakBW,
			}
			if p.name == "fp32" {
				fp32GFLOPS = rec.GFLOPS
			}
			if p.vsFP32 && fp32GFLOPS > 0 {
				rec.VsFP32 = rec.GFLOPS / fp32GFLOPS
			}
			if s.batch > 0 {
				rec.Kernel += "-batched"
				rec.Shape = fmt.Sprintf("%dx%s", s.batch, rec.Shape)
			}
			recs = append(recs, rec)
		}
	}
	return recs, nil
}

// gemmMedianSeconds runs call once to warm up (pack buffers, caches), then
// times it repeatedly and returns the median.
func gemmMedianSeconds(call func(), quick bool) float64 {
	call()
	budget, minReps, maxReps := 500*time.Millisecond, 5, 200
	if quick {
		budget, minReps, maxReps = 0, 3, 3
	}
	var times []float64
	start := time.Now()
	for len(times) < minReps || (len(times) < maxReps && time.Since(start) < budget) {
		t0 := time.Now()
		call()
		times = append(times, time.Since(t0).Seconds())
	}
	slices.Sort(times)
	return times[len(times)/2]
}

func gemmRandomFloats(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64())
	}
	return s
}
