package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/dstune/dstune/kernels"
	"github.com/dstune/dstune/update"
)

// The DST kernels' profiles: `dstune profile score-count|select|masked-update`.
// Every scan reports GB/s of the bytes it actually reads and writes, next to
// the one-stream read bandwidth measured on the spot (peak_gbps). The
// bandwidth rows themselves (read, three-stream read, copy) are printed too,
// so each figure can be read as a fraction of either.

func init() {
	measurePeakReadGB = func(threads int) float64 { return kernels.MeasureReadBandwidth(threads, 1) }
	registerProfiler(profiler{name: "score-count", run: profileScoreCount})
	registerProfiler(profiler{name: "select", run: profileSelect})
	registerProfiler(profiler{name: "masked-update", run: profileMaskedUpdate})
}

// dstProfileSize is the number of floats per array: 10⁸ as the targets say,
// or a small size for --quick.
func dstProfileSize(env *profileEnv) int {
	if env.quick {
		return 100_000
	}
	return 100_000_000
}

func dstReps(env *profileEnv) int {
	if env.quick {
		return 3
	}
	return 7
}

// dstArrays holds the profile's data, made once per process: θ0 ~ N(0,
// 0.02), θ̂ = θ0 + N(0, 10⁻³), gradients N(0, 10⁻²), AdamW state.
type dstArrays struct {
	theta, seed, grad, m, v, scratch []float32
}

var (
	dstDataOnce sync.Once
	dstData     *dstArrays
)

func profileData(n int) *dstArrays {
	dstDataOnce.Do(func() {
		rng := rand.New(rand.NewPCG(1, 2))
		d := &dstArrays{}
		for _, a := range []*[]float32{&d.theta, &d.seed, &d.grad, &d.m, &d.v, &d.scratch} {
			*a = make([]float32, n)
		}
		for i := range n {
			d.seed[i] = float32(rng.NormFloat64() * 0.02)
			d.theta[i] = d.seed[i] + float32(rng.NormFloat64()*1e-3)
			d.grad[i] = float32(rng.NormFloat64() * 1e-2)
			d.m[i] = float32(rng.NormFloat64() * 1e-3)
			d.v[i] = float32(rng.Float64() * 1e-4)
		}
		dstData = d
	})
	return dstData
}

var (
	probeOnce sync.Once
	probe     *kernels.BandwidthProbe
)

// measured is one kernel's timing and the machine's bandwidth measured
// between its repetitions.
type measured struct {
	ms, readGB, copyGB float64
}

// measure runs setup (untimed) and f reps times after one warm-up, and
// between repetitions streams through the bandwidth probe: the medians
// compare the kernel with the machine as it was at that moment.
func measure(env *profileEnv, setup, f func()) measured {
	probeOnce.Do(func() {
		bytes := 0
		if env.quick {
			bytes = 8 << 20
		}
		probe = kernels.NewBandwidthProbe(env.threads, bytes)
	})
	reps := dstReps(env)
	if setup != nil {
		setup()
	}
	f()
	var ms, rd, cp []float64
	for range reps {
		if setup != nil {
			setup()
		}
		start := time.Now()
		f()
		ms = append(ms, float64(time.Since(start).Nanoseconds())/1e6)
		rd = append(rd, probe.Read(env.threads))
		cp = append(cp, probe.Copy(env.threads))
	}
	return measured{median(ms), median(rd), median(cp)}
}

func median(x []float64) float64 {
	slices.Sort(x)
	return x[len(x)/2]
}

func scanRecord(env *profileEnv, kernel string, n int, m measured, bytes float64) profileRecord {
	return profileRecord{
		Kernel: kernel, Shape: strconv.Itoa(n), Threads: env.threads, ISA: env.isa.String(),
		MS: m.ms, GBPS: bytes / (m.ms / 1e3) / 1e9, PeakGBPS: m.readGB,
	}
}

// bandwidthRecords are the machine's own figures, measured now: the
// one-stream read (also every record's peak_gbps), three streams, copy.
func bandwidthRecords(env *profileEnv) []profileRecord {
	bytes := 1 << 30
	read1 := kernels.MeasureReadBandwidth(env.threads, 1)
	read3 := kernels.MeasureReadBandwidth(env.threads, 3)
	cp := kernels.MeasureCopyBandwidth(env.threads)
	mk := func(kernel string, gbps float64) profileRecord {
		return profileRecord{Kernel: kernel, Shape: strconv.Itoa(bytes / 4), Threads: env.threads, ISA: kernels.HardwareISA().String(),
			MS: float64(bytes) / gbps / 1e6, GBPS: gbps, PeakGBPS: read1}
	}
	return []profileRecord{mk("read-1stream", read1), mk("read-3streams", read3), mk("copy", cp)}
}

// copyRecord reports the copy bandwidth measured next to a kernel.
func copyRecord(env *profileEnv, m measured) profileRecord {
	return profileRecord{Kernel: "copy(beside)", Shape: strconv.Itoa(1 << 26), Threads: env.threads, ISA: kernels.HardwareISA().String(),
		MS: float64(1<<28) / m.copyGB / 1e6, GBPS: m.copyGB, PeakGBPS: m.readGB}
}

// bisectionThresholds are the seven midpoints Algorithm 2's m = 3
// bisection tree can visit around q (r = 2).
func bisectionThresholds(q float32) []float32 {
	lo, hi := q/2, 2*q
	var ts []float32
	var walk func(lo, mid, hi float32, depth int)
	walk = func(lo, mid, hi float32, depth int) {
		ts = append(ts, mid)
		if depth == 3 {
			return
		}
		walk(lo, (lo+mid)/2, mid, depth+1)
		walk(mid, (mid+hi)/2, hi, depth+1)
	}
	walk(lo, q, hi, 1)
	return ts
}

func profileScoreCount(env *profileEnv) ([]profileRecord, error) {
	n := dstProfileSize(env)
	d := profileData(n)
	var recs []profileRecord
	if !env.quick {
		recs = bandwidthRecords(env)
	}
	ts := bisectionThresholds(2e-5)
	counts := make([]int64, len(ts))
	for _, dist := range []kernels.Distance{kernels.DistanceInvRel, kernels.DistanceRel, kernels.DistanceAbs} {
		m := measure(env, nil, func() { kernels.CountAbove(counts, ts, d.theta, d.seed, dist, env.threads) })
		recs = append(recs, scanRecord(env, "score-count-"+dist.String(), n, m, 8*float64(n)))
	}
	m := measure(env, nil, func() { kernels.CountAboveFloats(counts, ts, d.theta, env.threads) })
	recs = append(recs, scanRecord(env, "count-floats", n, m, 4*float64(n)))

	// The optimizer-fused form reads param, grad, both moments and the
	// seed and writes param and the moments: 32 bytes an entry. It steps
	// the same arrays again and again; with lr 1e-6 they stay finite.
	h := kernels.AdamW(update.AdamW{LR: 1e-6, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}.Scalars(update.StepInfo{Step: 10, LRScale: 1}))
	m = measure(env, nil, func() {
		kernels.AdamWStepCount(h, d.theta, d.grad, d.m, d.v, d.seed, kernels.DistanceInvRel, ts, counts, env.threads)
	})
	recs = append(recs, scanRecord(env, "adamw-count", n, m, 32*float64(n)), copyRecord(env, m))
	m = measure(env, nil, func() { kernels.AdamWStep(h, d.theta, d.grad, d.m, d.v, env.threads) })
	recs = append(recs, scanRecord(env, "adamw", n, m, 28*float64(n)))

	// SGD with momentum: param, grad, buffer, seed read; param, buffer written.
	hs := kernels.SGD(update.SGD{LR: 1e-6, Momentum: 0.9, WeightDecay: 0.01}.Scalars(update.StepInfo{Step: 10, LRScale: 1}))
	m = measure(env, nil, func() {
		kernels.SGDStepCount(hs, d.theta, d.grad, d.m, d.seed, kernels.DistanceInvRel, ts, counts, env.threads)
	})
	recs = append(recs, scanRecord(env, "sgd-count", n, m, 24*float64(n)))

	// Adafactor on a rows×1024 matrix (a transformer weight's row length):
	// the two reductions over the gradient (one stream each), then the
	// update fused with counting (param, grad, first moment, seed read;
	// param, moment written).
	cols := 1024
	rows := n / cols
	mn := rows * cols
	rowSums, colSums := make([]float32, rows), make([]float32, cols)
	m = measure(env, nil, func() { kernels.AdafactorSquareSums(rowSums, colSums, d.grad[:mn], rows, cols, 1e-30) })
	recs = append(recs, scanRecord(env, "adafactor-sums", mn, m, 4*float64(mn)))
	rowScale, colScale := make([]float32, rows), make([]float32, cols)
	for i := range rowScale {
		rowScale[i] = 1
	}
	for j := range colScale {
		colScale[j] = 1
	}
	m = measure(env, nil, func() { kernels.AdafactorUpdateSquares(d.grad[:mn], rowScale, colScale, rows, cols) })
	recs = append(recs, scanRecord(env, "adafactor-rms", mn, m, 4*float64(mn)))
	m = measure(env, nil, func() {
		kernels.AdafactorApplyCount(d.theta[:mn], d.grad[:mn], rowScale, colScale, rows, cols, 1e-9, 0.9, d.m[:mn], d.seed[:mn], kernels.DistanceInvRel, ts, counts, env.threads)
	})
	recs = append(recs, scanRecord(env, "adafactor-count", mn, m, 24*float64(mn)))
	return recs, nil
}

func profileSelect(env *profileEnv) ([]profileRecord, error) {
	n := dstProfileSize(env)
	d := profileData(n)
	var recs []profileRecord
	k := int64(max(1, n/10_000)) // the top 10⁻⁴
	var sel kernels.Selector
	var kept int64
	xs := [][]float32{d.grad}
	m := measure(env, nil, func() { _, kept = sel.TopKFloats(k, xs, env.threads) })
	if kept != k {
		return nil, fmt.Errorf("TopKFloats kept %d of %d", kept, k)
	}
	recs = append(recs, scanRecord(env, "select-floats", n, m, float64(sel.BytesRead())))
	pieces := []kernels.SiloPiece{{Theta: d.theta, Seed: d.seed}}
	m = measure(env, nil, func() { _, kept = sel.TopK(k, kernels.DistanceInvRel, pieces, env.threads) })
	if kept != k {
		return nil, fmt.Errorf("TopK kept %d of %d", kept, k)
	}
	recs = append(recs, scanRecord(env, "select-inv-rel", n, m, float64(sel.BytesRead())))
	return recs, nil
}

func profileMaskedUpdate(env *profileEnv) ([]profileRecord, error) {
	n := dstProfileSize(env)
	d := profileData(n)
	var sel kernels.Selector
	th, _ := sel.TopK(int64(n/1000), kernels.DistanceInvRel, []kernels.SiloPiece{{Theta: d.theta, Seed: d.seed}}, env.threads)
	// Each repetition updates a fresh copy of θ̂ (the copy is not timed).
	work := d.scratch
	m := measure(env, func() { copy(work, d.theta) }, func() {
		kernels.MaskedUpdate(work, d.seed, kernels.DistanceInvRel, th, 0, env.threads)
	})
	recs := []profileRecord{scanRecord(env, "masked-update", n, m, 12*float64(n)), copyRecord(env, m)}
	idx := make([]int32, 0, n/500)
	m = measure(env, func() { copy(work, d.theta) }, func() {
		idx = kernels.MaskedUpdateAppend(idx[:0], work, d.seed, kernels.DistanceInvRel, th, 0)
	})
	r := scanRecord(env, "masked-update-indices", n, m, 12*float64(n)+4*float64(len(idx)))
	r.Threads = 1 // the index-writing variant runs on one goroutine
	recs = append(recs, r)
	return recs, nil
}
