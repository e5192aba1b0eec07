package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/dstune/dstune/kernels"
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

// medianMS times f reps times (after one untimed warm-up call) and returns
// the median in milliseconds.
func medianMS(reps int, f func()) float64 {
	f()
	times := make([]float64, reps)
	for r := range times {
		start := time.Now()
		f()
		times[r] = float64(time.Since(start).Nanoseconds()) / 1e6
	}
	slices.Sort(times)
	return times[reps/2]
}

func scanRecord(env *profileEnv, kernel string, n int, ms float64, bytes float64) profileRecord {
	return profileRecord{
		Kernel: kernel, Shape: strconv.Itoa(n), Threads: env.threads, ISA: env.isa.String(),
		MS: ms, GBPS: bytes / (ms / 1e3) / 1e9, PeakGBPS: env.peakGBPS(),
	}
}

// bandwidthRecords are the machine's own figures, measured now.
func bandwidthRecords(env *profileEnv) []profileRecord {
	bytes := 1 << 30
	read3 := kernels.MeasureReadBandwidth(env.threads, 3)
	cp := kernels.MeasureCopyBandwidth(env.threads)
	peak := env.peakGBPS()
	mk := func(kernel string, gbps float64) profileRecord {
		return profileRecord{Kernel: kernel, Shape: strconv.Itoa(bytes / 4), Threads: env.threads, ISA: kernels.HardwareISA().String(),
			MS: float64(bytes) / gbps / 1e6, GBPS: gbps, PeakGBPS: peak}
	}
	return []profileRecord{mk("read-1stream", peak), mk("read-3streams", read3), mk("copy", cp)}
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
	reps := dstReps(env)
	recs := bandwidthRecords(env)
	ts := bisectionThresholds(2e-5)
	counts := make([]int64, len(ts))
	for _, dist := range []kernels.Distance{kernels.DistanceInvRel, kernels.DistanceRel, kernels.DistanceAbs} {
		ms := medianMS(reps, func() { kernels.CountAbove(counts, ts, d.theta, d.seed, dist, env.threads) })
		recs = append(recs, scanRecord(env, "score-count-"+dist.String(), n, ms, 8*float64(n)))
	}
	ms := medianMS(reps, func() { kernels.CountAboveFloats(counts, ts, d.theta, env.threads) })
	recs = append(recs, scanRecord(env, "count-floats", n, ms, 4*float64(n)))

	// The optimizer-fused form reads param, grad, both moments and the
	// seed and writes param and the moments: 32 bytes an entry. It steps
	// the same arrays again and again; with lr 1e-6 they stay finite.
	h := kernels.AdamW{LR: 1e-6, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, Step: 10}
	ms = medianMS(reps, func() {
		kernels.AdamWStepCount(h, d.theta, d.grad, d.m, d.v, d.seed, kernels.DistanceInvRel, ts, counts, env.threads)
	})
	recs = append(recs, scanRecord(env, "adamw-count", n, ms, 32*float64(n)))
	ms = medianMS(reps, func() { kernels.AdamWStep(h, d.theta, d.grad, d.m, d.v, env.threads) })
	recs = append(recs, scanRecord(env, "adamw", n, ms, 28*float64(n)))
	return recs, nil
}

func profileSelect(env *profileEnv) ([]profileRecord, error) {
	n := dstProfileSize(env)
	d := profileData(n)
	reps := dstReps(env)
	var recs []profileRecord
	k := int64(n / 10_000) // the top 10⁻⁴
	var sel kernels.Selector
	var kept int64
	xs := [][]float32{d.grad}
	ms := medianMS(reps, func() { _, kept = sel.TopKFloats(k, xs, env.threads) })
	if kept != k {
		return nil, fmt.Errorf("TopKFloats kept %d of %d", kept, k)
	}
	recs = append(recs, scanRecord(env, "select-floats", n, ms, float64(sel.BytesRead())))
	pieces := []kernels.SiloPiece{{Theta: d.theta, Seed: d.seed}}
	ms = medianMS(reps, func() { _, kept = sel.TopK(k, kernels.DistanceInvRel, pieces, env.threads) })
	if kept != k {
		return nil, fmt.Errorf("TopK kept %d of %d", kept, k)
	}
	recs = append(recs, scanRecord(env, "select-inv-rel", n, ms, float64(sel.BytesRead())))
	return recs, nil
}

func profileMaskedUpdate(env *profileEnv) ([]profileRecord, error) {
	n := dstProfileSize(env)
	d := profileData(n)
	reps := dstReps(env)
	var sel kernels.Selector
	th, _ := sel.TopK(int64(n/1000), kernels.DistanceInvRel, []kernels.SiloPiece{{Theta: d.theta, Seed: d.seed}}, env.threads)
	// Each repetition updates a fresh copy of θ̂ (the copy is not timed).
	work := d.scratch
	ms := medianTimedAfter(reps, func() { copy(work, d.theta) }, func() {
		kernels.MaskedUpdate(work, d.seed, kernels.DistanceInvRel, th, 0, env.threads)
	})
	recs := []profileRecord{scanRecord(env, "masked-update", n, ms, 12*float64(n))}
	idx := make([]int32, 0, n/500)
	ms = medianTimedAfter(reps, func() { copy(work, d.theta) }, func() {
		idx = kernels.MaskedUpdateAppend(idx[:0], work, d.seed, kernels.DistanceInvRel, th, 0)
	})
	r := scanRecord(env, "masked-update-indices", n, ms, 12*float64(n)+4*float64(len(idx)))
	r.Threads = 1 // the index-writing variant runs on one goroutine
	recs = append(recs, r)
	return recs, nil
}

// medianTimedAfter is medianMS with an untimed setup before every call.
func medianTimedAfter(reps int, setup, f func()) float64 {
	times := make([]float64, reps)
	for r := range times {
		setup()
		start := time.Now()
		f()
		times[r] = float64(time.Since(start).Nanoseconds()) / 1e6
	}
	slices.Sort(times)
	return times[reps/2]
}
