//go:build openblas && cgo && linux

package openblas

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/dstune/dstune/kernels"
	"golang.org/x/sys/unix"
)

type shape struct {
	m, n, k        int
	transA, transB bool
}

func (s shape) String() string {
	t := []byte("NN")
	if s.transA {
		t[0] = 'T'
	}
	if s.transB {
		t[1] = 'T'
	}
	return fmt.Sprintf("shape=%dx%dx%d/trans=%s", s.m, s.n, s.k, t)
}

func (s shape) lds() (lda, ldb int) {
	lda, ldb = s.k, s.n
	if s.transA {
		lda = s.m
	}
	if s.transB {
		ldb = s.k
	}
	return
}

// shapes are those of `dstune profile gemm`: a BERT-base layer's forward products
// with 2048 tokens (NN), their dX (NT, (M,K,N)) and dW (TN, (K,N,M)), and
// two squares.
func shapes() []shape {
	var out []shape
	for _, f := range [][3]int{{2048, 768, 768}, {2048, 3072, 768}, {2048, 768, 3072}} {
		m, n, k := f[0], f[1], f[2]
		out = append(out, shape{m, n, k, false, false}, shape{m, k, n, false, true}, shape{k, n, m, true, false})
	}
	return append(out, shape{512, 512, 512, false, false}, shape{1024, 1024, 1024, false, false})
}

func random(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64())
	}
	return s
}

func TestCoreName(t *testing.T) {
	t.Logf("OpenBLAS %s; core %s", Config(), CoreName())
}

// TestAgrees checks that the harness calls OpenBLAS with the same meaning
// as kernels.Sgemm (transposes, leading dimensions, alpha, beta).
func TestAgrees(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	SetThreads(1)
	for _, s := range []shape{{37, 45, 29, false, false}, {37, 45, 29, false, true}, {37, 45, 29, true, false}, {37, 45, 29, true, true}, {300, 200, 260, false, true}} {
		lda, ldb := s.lds()
		lda, ldb = lda+3, ldb+1
		ldc := s.n + 2
		a := random(rng, (max(s.m, s.k)+1)*lda)
		b := random(rng, (max(s.k, s.n)+1)*ldb)
		c0 := random(rng, s.m*ldc)
		ours, theirs := slices.Clone(c0), slices.Clone(c0)
		kernels.Sgemm(1, s.transA, s.transB, s.m, s.n, s.k, 0.5, a, lda, b, ldb, -2, ours, ldc)
		Sgemm(s.transA, s.transB, s.m, s.n, s.k, 0.5, a, lda, b, ldb, -2, theirs, ldc)
		for i := range s.m {
			for j := range s.n {
				o, th := ours[i*ldc+j], theirs[i*ldc+j]
				if math.Abs(float64(o-th)) > 1e-4*math.Sqrt(float64(s.k))*(1+math.Abs(float64(th))) {
					t.Fatalf("%v: C[%d,%d] ours %v, OpenBLAS %v", s, i, j, o, th)
				}
			}
		}
	}
}

// BenchmarkVsOpenBLAS times kernels.Sgemm and OpenBLAS's cblas_sgemm on
// the same operands alternately in one process (the order swapped every
// iteration), and reports each one's median GFLOP/s and the median of the
// paired ratios (ours / OpenBLAS): machine noise hits both sides of a pair
// alike. Install the library and run it with (see README.md):
//
//	apt-get update && apt-get install -y libopenblas-dev
//	OPENBLAS_VERBOSE=2 OPENBLAS_THREAD_TIMEOUT=4 go test -tags openblas -run XXX -bench VsOpenBLAS -benchtime 15x ./tests/openblas
func BenchmarkVsOpenBLAS(b *testing.B) {
	b.Logf("OpenBLAS %s; core %s; dstune ISA %v", Config(), CoreName(), kernels.ActiveISA())
	rng := rand.New(rand.NewPCG(9, 10))
	for _, threads := range []int{1, 2} {
		for _, s := range shapes() {
			lda, ldb := s.lds()
			a := random(rng, s.m*s.k)
			bm := random(rng, s.k*s.n)
			c := make([]float32, s.m*s.n)
			flops := 2 * float64(s.m) * float64(s.n) * float64(s.k)
			b.Run(fmt.Sprintf("%v/threads=%d", s, threads), func(b *testing.B) {
				ours := func() { kernels.Sgemm(threads, s.transA, s.transB, s.m, s.n, s.k, 1, a, lda, bm, ldb, 0, c, s.n) }
				theirs := func() { Sgemm(s.transA, s.transB, s.m, s.n, s.k, 1, a, lda, bm, ldb, 0, c, s.n) }
				sideBySide(b, threads, flops, ours, theirs)
			})
		}
		// Attention: 64 products of 128×128 inner 64 (Q·Kᵀ, NT); OpenBLAS
		// 0.3.21 has no batched call, so it loops over cblas_sgemm.
		const batch, seq, dh = 64, 128, 64
		q, k := random(rng, batch*seq*dh), random(rng, batch*seq*dh)
		scores := make([]float32, batch*seq*seq)
		b.Run(fmt.Sprintf("attention=64x128x128x64/trans=NT/threads=%d", threads), func(b *testing.B) {
			ours := func() {
				kernels.SgemmBatched(threads, false, true, seq, seq, dh, 1, q, dh, seq*dh, k, dh, seq*dh, 0, scores, seq, seq*seq, batch)
			}
			theirs := func() {
				for i := range batch {
					Sgemm(false, true, seq, seq, dh, 1, q[i*seq*dh:], dh, k[i*seq*dh:], dh, 0, scores[i*seq*seq:], seq)
				}
			}
			sideBySide(b, threads, 2*float64(batch*seq*seq*dh), ours, theirs)
		})
	}
}

// sideBySide runs ours and theirs alternately once per benchmark iteration
// and reports the medians. With several threads, OpenBLAS's idle threads
// keep spinning (sched_yield) for 2^OPENBLAS_THREAD_TIMEOUT TSC ticks after
// a call, 2^28 by default (0.1 s here), and take a core from the next
// call. Run threaded comparisons with OPENBLAS_THREAD_TIMEOUT=4 (its
// minimum: the threads sleep at once and are woken by the next call, as
// dstune's are); without it the benchmark pauses 150 ms before each call
// instead, which leaves the cores idle long enough that the next call
// starts slowly on this VM and distorts short calls on both sides. On one
// thread both run on the benchmark's locked OS thread, so it also reports
// the paired ratio of that thread's CPU time (x-openblas-cpu), which time
// stolen by other processes on a shared machine does not distort.
func sideBySide(b *testing.B, threads int, flops float64, ours, theirs func()) {
	SetThreads(threads)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pause := time.Duration(0)
	if threads > 1 && os.Getenv("OPENBLAS_THREAD_TIMEOUT") == "" {
		pause = 150 * time.Millisecond
	}
	ours()
	theirs()
	var tOurs, tTheirs, ratio, cpuRatio []float64
	timeIt := func(f func()) (wall, cpu float64) {
		time.Sleep(pause)
		c0 := threadCPUSeconds()
		start := time.Now()
		f()
		return time.Since(start).Seconds(), threadCPUSeconds() - c0
	}
	i := 0
	for b.Loop() {
		var o, t, oc, tc float64
		if i%2 == 0 {
			o, oc = timeIt(ours)
			t, tc = timeIt(theirs)
		} else {
			t, tc = timeIt(theirs)
			o, oc = timeIt(ours)
		}
		i++
		tOurs, tTheirs, ratio, cpuRatio = append(tOurs, o), append(tTheirs, t), append(ratio, t/o), append(cpuRatio, tc/oc)
	}
	b.ReportMetric(flops/median(tOurs)/1e9, "dstune-GFLOP/s")
	b.ReportMetric(flops/median(tTheirs)/1e9, "openblas-GFLOP/s")
	b.ReportMetric(median(ratio), "x-openblas")
	if threads == 1 {
		b.ReportMetric(median(cpuRatio), "x-openblas-cpu")
	}
}

// threadCPUSeconds is the CPU time the calling OS thread has used.
func threadCPUSeconds() float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return float64(ts.Nano()) / 1e9
}

func median(s []float64) float64 {
	s = slices.Clone(s)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
