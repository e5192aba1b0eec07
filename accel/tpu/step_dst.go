package tpu

import (
	"errors"
	"fmt"
	"math"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// MaxRefineSteps is the largest Algorithm 2 m the device step takes: it
// counts Δ against all 2^m+1 thresholds the bisection can visit in one
// pass, which grows too wide beyond m = 6 (65 thresholds).
const MaxRefineSteps = 6

// SelectionUnit is one selection of a DST step on the device: a
// non-empty unit of the update.Selection. Program.Units lists them in the
// order of the per-unit state ("dst:q", "dst:ready") and results.
type SelectionUnit struct {
	Unit int   // index in update.Selection.Units
	Size int64 // entries
	K    int64 // entries kept
}

// DST state and result names. The per-unit vectors follow Program.Units.
const (
	stateQ     = "dst:q"     // float32[U]: the carried threshold (update.SelectionState.Q)
	stateReady = "dst:ready" // bool[U]: Algorithm 2 may start from it
	stateFixed = "dst:fixed" // bool: the subset no longer changes

	// ResultDST packs a step's per-unit DST outcome into one int64[8, U]
	// result (one copy back to the host): the rows below.
	ResultDST      = "dst:metrics"
	ResultSiloKept = "dst:silo_kept" // int64[G]: normalized runs: entries each group (update.Selection.Groups) keeps
)

// The rows of ResultDST.
const (
	rowKept      = iota // entries the unit keeps free
	rowChanged          // kept entries not kept the step before
	rowThreshold        // the threshold q used (float32 bits)
	rowSelected         // 1: a selection ran (0: the subset is fixed)
	rowAlg2             // 1: Algorithm 2 ran
	rowAlg2Count        // #{Δ > q̃} for Algorithm 2's own answer q̃
	rowExact            // 1: the exact selection ran
	rowFallback         // 1: the band between the counted candidates exceeds the cap (an exact fallback)
	numDSTRows
)

type pieceLayout struct {
	name   string
	shape  ir.Shape
	offset int     // position of the first entry in its unit
	scale  float32 // normalized runs: Δ multiplier; 0: none
}

type unitLayout struct {
	SelectionUnit
	pieces []pieceLayout
}

// dstLayout is the selections of a step and, for a normalized run, the
// groups whose kept entries are reported.
type dstLayout struct {
	units  []unitLayout
	groups [][]string // normalized runs: each group's parameters
}

// layoutDST lays out the device's selections: the selection's non-empty
// units, over trainable parameters of the given shapes. It refuses what
// the device step does not run: the printed Algorithm 2 (a CPU
// diagnostic) and Algorithm 2 with more than MaxRefineSteps steps.
func layoutDST(d *update.Selection, shapes map[string]ir.Shape) (*dstLayout, error) {
	sizes := make(map[string]int, len(shapes))
	for name, shape := range shapes {
		sizes[name] = shape.Size()
	}
	if err := d.Check(sizes); err != nil {
		return nil, fmt.Errorf("tpu: %w", err)
	}
	if d.PaperAlg2 {
		return nil, errors.New("--paper-alg2 is not supported on the pjrt backend (a CPU diagnostic)")
	}
	if !d.Exact && d.Bisection.Steps > MaxRefineSteps {
		return nil, fmt.Errorf("tpu: Algorithm 2 with m = %d refinement steps: the device step takes at most %d", d.Bisection.Steps, MaxRefineSteps)
	}
	L := &dstLayout{}
	for i, unit := range d.Units {
		u := unitLayout{SelectionUnit: SelectionUnit{Unit: i, K: unit.K}}
		for _, p := range unit.Pieces {
			shape := shapes[p.Param]
			scale := float32(0)
			if d.Normalized {
				scale = p.Scale
			}
			u.pieces = append(u.pieces, pieceLayout{name: p.Param, shape: shape.Clone(), offset: int(u.Size), scale: scale})
			u.Size += int64(shape.Size())
		}
		if u.Size > 0 {
			L.units = append(L.units, u)
		}
	}
	if d.Normalized {
		L.groups = make([][]string, len(d.Groups))
		for _, p := range d.Units[0].Pieces {
			L.groups[p.Group] = append(L.groups[p.Group], p.Param)
		}
	}
	if len(L.units) == 0 {
		return nil, errors.New("tpu: DST needs at least one non-empty silo")
	}
	return L, nil
}

// score emits Δ = d(θ̂, θ0) as update.Distance.Score defines it.
func score(f *fn, d update.Distance, theta, seed value) value {
	diff := f.sub(theta, seed)
	abs := func(v value) value { return f.unary("stablehlo.abs", v) }
	switch d {
	case update.DistanceRel:
		q := abs(f.div(diff, seed))
		return f.selectOp(f.compare("EQ", diff, f.splat(diff.t, 0)), f.splat(diff.t, 0), q)
	case update.DistanceInvRel:
		return abs(f.mul(seed, diff))
	}
	return abs(diff)
}

// dstState is the program's DST arguments.
type dstState struct {
	seeds, masks    map[string]value
	q, ready, fixed value
	factor          value // Algorithm 2's r, a step scalar (so that XLA cannot turn q/r into q·(1/r))
}

// dstResult is what the DST update computes.
type dstResult struct {
	params, masks   map[string]value
	q, ready, fixed value // new state
	results         []namedValue
}

type namedValue struct {
	name string
	v    value
}

// dstUpdate emits one DST step after the optimizer's: for every
// selection unit the scores, the threshold, the masked update and the
// metrics. A fixed subset (churn off after the first step, or a random
// mask) skips the selection in a conditional; so does, in Algorithm 2
// mode, the exact selection when every unit's candidates hold one with
// exactly k entries above it.
func (s *stepLowering) dstUpdate(L *dstLayout, updated map[string]value, st dstState) dstResult {
	sc := s.unitScores(L, updated, st)
	sel := s.selectThresholds(L, st, sc)
	res, kept, changed, pieceKept := s.applySelection(L, updated, st, sc, sel)
	s.outcome(L, st, sel, kept, changed, pieceKept, &res)
	return res
}

// unitScores are each unit's Δ (scaled in a normalized run), its
// previous subset and its positions, laid end to end.
type unitScores struct {
	deltas, prev, pos []value
}

func (s *stepLowering) unitScores(L *dstLayout, updated map[string]value, st dstState) unitScores {
	f, d := s.f, s.prog.Selection
	nu := len(L.units)
	u := unitScores{deltas: make([]value, nu), prev: make([]value, nu), pos: make([]value, nu)}
	for i, unit := range L.units {
		var ds, pm []value
		for _, p := range unit.pieces {
			flat := ir.Shape{p.shape.Size()}
			sc := score(f, d.Distance, updated[p.name], st.seeds[p.name])
			if p.scale != 0 {
				sc = f.mul(sc, f.splat(sc.t, float64(p.scale)))
			}
			ds = append(ds, f.reshape(sc, flat))
			pm = append(pm, f.reshape(st.masks[p.name], flat))
		}
		u.deltas[i], u.prev[i] = f.concatenate(0, ds), f.concatenate(0, pm)
		u.pos[i] = f.iota(ir.Type{DType: positionType(unit.Size), Shape: ir.Shape{int(unit.Size)}}, 0)
	}
	return u
}

// selection is a step's choice per unit: the threshold q and tie end,
// Algorithm 2's count, and whether Algorithm 2 ran, the exact selection
// ran and the band would exceed the cap.
type selection struct {
	q, tieEnd, alg2Count, alg2, exact, fallback value
}

// selectThresholds emits the selection: a fixed subset skips it (in a
// conditional, when the subset can be fixed); otherwise an exact
// selection every step, or Algorithm 2 whose exactly-k candidates stand
// in for the exact selection, which runs (in a conditional) only where
// no candidate does.
func (s *stepLowering) selectThresholds(L *dstLayout, st dstState, sc unitScores) selection {
	f, d := s.f, s.prog.Selection
	nu := len(L.units)
	vec := func(dt ir.DType) ir.Type { return ir.Type{DType: dt, Shape: ir.Shape{nu}} }
	ks := ir.NewTensor(ir.Int64, ir.Shape{nu})
	for i, u := range L.units {
		ks.Int64s()[i] = u.K
	}
	types := []ir.Type{vec(ir.Float32), vec(ir.Int64), vec(ir.Int64), vec(ir.Bool), vec(ir.Bool), vec(ir.Bool)}
	fixedBranch := func(r *fn) []value {
		return []value{st.q, r.splat(vec(ir.Int64), 0), r.splat(vec(ir.Int64), 0),
			r.splat(vec(ir.Bool), 0), r.splat(vec(ir.Bool), 0), r.splat(vec(ir.Bool), 0)}
	}
	positive := ir.NewTensor(ir.Bool, ir.Shape{nu}) // units that keep anything
	noneKept := ir.NewTensor(ir.Float32, ir.Shape{nu})
	for i, u := range L.units {
		positive.Bools()[i] = u.K > 0
		if u.K <= 0 {
			noneKept.Float32s()[i] = float32(math.Inf(1)) // the threshold that keeps nothing
		}
	}
	exactAll := func(e *fn) []value {
		qs, tes := make([]value, nu), make([]value, nu)
		for i, u := range L.units {
			q, te := exactSelection(e, sc.deltas[i], sc.pos[i], u.K, u.Size)
			qs[i], tes[i] = e.reshape(q, ir.Shape{1}), e.reshape(te, ir.Shape{1})
		}
		return []value{e.concatenate(0, qs), e.concatenate(0, tes)}
	}
	selectBranch := func(r *fn) []value {
		zeros := r.splat(vec(ir.Int64), 0)
		if d.Exact {
			sel := exactAll(r)
			return []value{sel[0], sel[1], zeros, r.splat(vec(ir.Bool), 0), r.constant(positive), r.splat(vec(ir.Bool), 0)}
		}
		a := algorithm2(r, d.Bisection, sc.deltas, st.q, st.factor, L.units, r.constant(ks), d.BandCap)
		alg2Ran := r.and(st.ready, r.constant(positive))
		if d.Normalized {
			// One exact selection every step; Algorithm 2 only reported.
			sel := exactAll(r)
			return []value{sel[0], sel[1], a.count, alg2Ran, r.constant(positive), r.splat(vec(ir.Bool), 0)}
		}
		candOK := r.and(alg2Ran, a.hasCand)
		needSel := r.unary("stablehlo.not", candOK)
		exactRan := r.and(needSel, r.constant(positive))
		anyExact := r.reduce(exactRan, r.scalarConst(ir.Bool, 0), reduceOr, []int{0})
		sel := r.ifOp(anyExact, []ir.Type{vec(ir.Float32), vec(ir.Int64)}, exactAll, func(e *fn) []value {
			return []value{e.constant(noneKept), e.splat(vec(ir.Int64), 0)}
		})
		q := r.selectOp(needSel, sel[0], a.cand)
		tieEnd := r.selectOp(needSel, sel[1], zeros)
		return []value{q, tieEnd, a.count, alg2Ran, exactRan, r.and(alg2Ran, a.fallback)}
	}
	// Only a subset that can be fixed (churn off, or a mask set from the
	// start) needs the conditional; otherwise the flag stays false.
	var out []value
	if d.Fixed != update.FixNever {
		out = f.ifOp(st.fixed, types, fixedBranch, selectBranch)
	} else {
		out = selectBranch(f)
	}
	return selection{q: out[0], tieEnd: out[1], alg2Count: out[2], alg2: out[3], exact: out[4], fallback: out[5]}
}

// applySelection keeps Δ > 0 && (Δ > q || (Δ == q && position < tieEnd)) — or the
// previous subset when it is fixed — resets the rest to the seed, and
// counts per unit the kept and entering entries (per piece too in a
// normalized run).
func (s *stepLowering) applySelection(L *dstLayout, updated map[string]value, st dstState, sc unitScores, sel selection) (res dstResult, kept, changed []value, pieceKept map[string]value) {
	f := s.f
	res = dstResult{params: map[string]value{}, masks: map[string]value{}}
	at := func(v value, i int) value { return f.reshape(f.slice(v, []int{i}, []int{i + 1}, []int{1}), ir.Shape{}) }
	count := func(b value) value {
		return f.reduce(f.convert(b, ir.Int64), f.scalarConst(ir.Int64, 0), reduceAdd, []int{0})
	}
	pieceKept = map[string]value{}
	for i, u := range L.units {
		n := ir.Shape{int(u.Size)}
		qi := f.broadcastTo(at(sel.q, i), n)
		te := f.broadcastTo(f.convert(at(sel.tieEnd, i), sc.pos[i].dtype()), n)
		keep := f.or(f.compare("GT", sc.deltas[i], qi), f.and(f.compare("EQ", sc.deltas[i], qi), f.compare("LT", sc.pos[i], te)))
		keep = f.and(keep, f.compare("GT", sc.deltas[i], f.splat(sc.deltas[i].t, 0))) // never a Δ of 0 (update.Keeps)
		keep = f.selectOp(st.fixed, sc.prev[i], keep)
		for _, p := range u.pieces {
			size := p.shape.Size()
			flat := f.slice(keep, []int{p.offset}, []int{p.offset + size}, []int{1})
			km := f.reshape(flat, p.shape)
			res.params[p.name] = f.selectOp(km, updated[p.name], st.seeds[p.name])
			res.masks[p.name] = km
			if L.groups != nil {
				pieceKept[p.name] = count(flat)
			}
		}
		kept = append(kept, f.reshape(count(keep), ir.Shape{1}))
		changed = append(changed, f.reshape(count(f.and(keep, f.unary("stablehlo.not", sc.prev[i]))), ir.Shape{1}))
	}
	return res, kept, changed, pieceKept
}

// outcome emits the state carried to the next step and the step's
// per-unit outcome (ResultDST; ResultSiloKept in a normalized run).
func (s *stepLowering) outcome(L *dstLayout, st dstState, sel selection, kept, changed []value, pieceKept map[string]value, res *dstResult) {
	f, d := s.f, s.prog.Selection
	nu := len(L.units)
	vec := func(dt ir.DType) ir.Type { return ir.Type{DType: dt, Shape: ir.Shape{nu}} }
	q := sel.q
	// The threshold carried is the one used when it can start Algorithm 2
	// (finite, ≥ 0); otherwise the next selection is exact and the old
	// value stays (update.Usable).
	usable := f.and(f.compare("GE", q, f.splat(vec(ir.Float32), 0)), f.compare("LT", q, f.splat(vec(ir.Float32), math.Inf(1))))
	selected := f.unary("stablehlo.not", st.fixed)
	res.q = f.selectOp(f.and(f.broadcastTo(selected, ir.Shape{nu}), usable), q, st.q)
	res.ready = f.selectOp(st.fixed, st.ready, usable)
	res.fixed = st.fixed
	if d.Fixed != update.FixNever {
		res.fixed = f.scalarConst(ir.Bool, 1)
	}
	rows := make([]value, numDSTRows)
	i64 := func(v value) value { return f.convert(v, ir.Int64) }
	rows[rowKept] = f.concatenate(0, kept)
	rows[rowChanged] = f.concatenate(0, changed)
	rows[rowThreshold] = i64(f.bitcast(q, ir.Uint32))
	rows[rowSelected] = i64(f.broadcastTo(selected, ir.Shape{nu}))
	rows[rowAlg2] = i64(sel.alg2)
	rows[rowAlg2Count] = sel.alg2Count
	rows[rowExact] = i64(sel.exact)
	rows[rowFallback] = i64(sel.fallback)
	res.results = []namedValue{{ResultDST, f.concatenate(0, reshapeAll(f, rows, ir.Shape{1, nu}))}}
	if L.groups != nil {
		sk := make([]value, len(L.groups))
		for i, names := range L.groups {
			total := f.scalarConst(ir.Int64, 0)
			for _, name := range names {
				total = f.add(total, pieceKept[name])
			}
			sk[i] = f.reshape(total, ir.Shape{1})
		}
		res.results = append(res.results, namedValue{ResultSiloKept, f.concatenate(0, sk)})
	}
}

// positionType is the integer type of a unit's positions.
func positionType(n int64) ir.DType {
	if n > math.MaxInt32 {
		return ir.Int64
	}
	return ir.Int32
}

// countCompare emits counts[j] = #{x_i dir c_j} for a vector x [n] and
// candidates c [J], as one broadcast compare and reduction.
func countCompare(f *fn, dir string, x, c value) value {
	n, j := x.shape()[0], c.shape()[0]
	grid := ir.Shape{n, j}
	cmp := f.compare(dir, f.broadcastInDim(x, grid, []int{0}), f.broadcastInDim(c, grid, []int{1}))
	return f.reduce(f.convert(cmp, ir.Int64), f.scalarConst(ir.Int64, 0), reduceAdd, []int{0})
}

type alg2Result struct {
	count    value // [U] int64: #{Δ > q̃}
	cand     value // [U] float32: a counted candidate with exactly k above it
	hasCand  value // [U] bool
	fallback value // [U] bool: no such candidate, and the CPU's band would exceed its cap
}

// algorithm2 emits Algorithm 2's step for every unit at once from the
// carried thresholds q [U]: the 2^m+1 candidates of
// update.Bisection.Candidates (q/r and r·q one float32 operation each, which
// equals the float64 result rounded once; midpoints (a+b)·½, exact
// halving after one rounding), each unit's counts in one pass over its
// scores, the m bisection steps (q̃ is q_lo or q_hi, whichever count is
// closer to k, q_hi on a tie), and which threshold update.Selection
// takes: the first candidate update.GridRun's schedule counts (its
// counting passes, replayed on the counts) with exactly k entries above it
// — that candidate is the threshold — or else whether the band between
// the nearest counted candidates exceeds bandCap (a fallback).
func algorithm2(f *fn, b update.Bisection, deltas []value, q, factor value, units []unitLayout, k value, bandCap int64) alg2Result {
	nu := len(units)
	nc := b.NumCandidates()
	top := nc - 1
	vf := ir.Type{DType: ir.Float32, Shape: ir.Shape{nu}}
	r := f.broadcastTo(factor, ir.Shape{nu})
	c := make([]value, nc)
	c[0], c[top], c[top/2] = f.div(q, r), f.mul(q, r), q
	half := f.splat(vf, 0.5)
	for span := top / 2; span >= 2; span /= 2 {
		for a := 0; a < top; a += span {
			c[a+span/2] = f.mul(f.add(c[a], c[a+span]), half)
		}
	}
	grid := ir.Shape{nu, nc}
	cands := f.concatenate(1, reshapeAll(f, c, ir.Shape{nu, 1})) // [U, J]
	rows := make([]value, nu)
	for i := range units {
		row := f.reshape(f.slice(cands, []int{i, 0}, []int{i + 1, nc}, []int{1, 1}), ir.Shape{nc})
		rows[i] = f.reshape(countCompare(f, "GT", deltas[i], row), ir.Shape{1, nc})
	}
	counts := f.concatenate(0, rows) // [U, J]
	kGrid := f.broadcastInDim(k, grid, []int{0})
	column := f.iota(ir.Type{DType: ir.Int32, Shape: grid}, 1)
	vi := ir.Type{DType: ir.Int32, Shape: ir.Shape{nu}}
	// at picks mat[u, idx[u]] for every unit (a one-hot sum: exact).
	hit := func(idx value) value { return f.compare("EQ", column, f.broadcastInDim(idx, grid, []int{0})) }
	at := func(mat, idx value) value {
		return f.reduce(f.selectOp(hit(idx), mat, f.splat(mat.t, 0)), f.scalarConst(mat.dtype(), 0), reduceAdd, []int{1})
	}
	atBool := func(mat, idx value) value {
		return f.reduce(f.and(hit(idx), mat), f.scalarConst(ir.Bool, 0), reduceOr, []int{1})
	}
	// A counting pass counts update.ThresholdsPerPass grid points: the
	// first at an even stride over the grid; a bisection step whose
	// midpoint is not counted yet counts its bracket in one more pass.
	first := ir.NewTensor(ir.Bool, ir.Shape{nc})
	for j := 0; j <= top; j += update.PassStride(0, top) {
		first.Bools()[j] = true
	}
	counted := f.broadcastInDim(f.constant(first), grid, []int{1})
	lo, hi, mid := f.splat(vi, 0), f.splat(vi, float64(top)), f.splat(vi, float64(top/2))
	one := f.splat(vi, 1)
	for range b.Steps {
		need := f.unary("stablehlo.not", atBool(counted, mid))
		stride := f.max(one, f.div(f.sub(hi, lo), f.splat(vi, float64(update.ThresholdsPerPass-1))))
		bl, bh, bs := f.broadcastInDim(lo, grid, []int{0}), f.broadcastInDim(hi, grid, []int{0}), f.broadcastInDim(stride, grid, []int{0})
		off := f.sub(column, bl)
		onStride := f.compare("EQ", f.sub(off, f.mul(f.div(off, bs), bs)), f.splat(ir.Type{DType: ir.Int32, Shape: grid}, 0))
		pass := f.and(f.and(f.compare("GE", column, bl), f.compare("LE", column, bh)), onStride)
		counted = f.or(counted, f.and(f.broadcastInDim(need, grid, []int{0}), pass))
		gt := f.compare("GT", at(counts, mid), k)
		lo, hi = f.selectOp(gt, mid, lo), f.selectOp(gt, hi, mid)
		mid = f.div(f.add(lo, hi), f.splat(vi, 2))
	}
	dist := func(i value) value { return f.unary("stablehlo.abs", f.sub(at(counts, i), k)) }
	pick := f.selectOp(f.compare("LT", dist(lo), dist(hi)), lo, hi)

	// GridRun.Tightest: the first counted candidate with exactly k, else
	// the last counted with more than k and the first with fewer.
	none, below := f.splat(ir.Type{DType: ir.Int32, Shape: grid}, float64(nc)), f.splat(ir.Type{DType: ir.Int32, Shape: grid}, -1)
	firstWhere := func(cond value) value {
		return f.reduce(f.selectOp(f.and(counted, cond), column, none), f.scalarConst(ir.Int32, float64(nc)), reduceMin, []int{1})
	}
	exactIdx := firstWhere(f.compare("EQ", counts, kGrid))
	hiIdx := firstWhere(f.compare("LT", counts, kGrid))
	loIdx := f.reduce(f.selectOp(f.and(counted, f.compare("GT", counts, kGrid)), column, below), f.scalarConst(ir.Int32, -1), reduceMax, []int{1})
	ncVec := f.splat(vi, float64(nc))
	hasCand := f.compare("LT", exactIdx, ncVec)
	sizes := ir.NewTensor(ir.Int64, ir.Shape{nu})
	for i, u := range units {
		sizes.Int64s()[i] = u.Size
	}
	zero64 := f.splat(ir.Type{DType: ir.Int64, Shape: ir.Shape{nu}}, 0)
	countLo := f.selectOp(f.compare("GE", loIdx, f.splat(vi, 0)), at(counts, loIdx), f.constant(sizes))
	countHi := f.selectOp(f.compare("LT", hiIdx, ncVec), at(counts, hiIdx), zero64)
	wide := f.compare("GT", f.sub(countLo, countHi), f.splat(ir.Type{DType: ir.Int64, Shape: ir.Shape{nu}}, float64(bandCap)))
	return alg2Result{
		count:    at(counts, pick),
		cand:     at(cands, exactIdx),
		hasCand:  hasCand,
		fallback: f.and(f.unary("stablehlo.not", hasCand), wide),
	}
}

// orderedKey emits the ordered key of float32 values (the CPU selector's
// too): a uint32 whose unsigned order is the values' order, -0 equal to
// +0, NaN (key 0) below every number.
func orderedKey(f *fn, x value) value {
	u32 := func(v uint32) value { return f.splat(ir.Type{DType: ir.Uint32, Shape: x.shape()}, float64(v)) }
	b := f.bitcast(x, ir.Uint32)
	neg := f.compare("GE", b, u32(0x80000000))
	key := f.selectOp(neg, f.unary("stablehlo.not", b), f.or(b, u32(0x80000000)))
	key = f.selectOp(f.compare("EQ", b, u32(0x80000000)), u32(0x80000000), key)
	return f.selectOp(f.compare("NE", x, x), u32(0), key)
}

// keyValue inverts orderedKey for a scalar key (not 0).
func keyValue(f *fn, key value) value {
	u32 := func(v uint32) value { return f.scalarConst(ir.Uint32, float64(v)) }
	pos := f.compare("GE", key, u32(0x80000000))
	return f.bitcast(f.selectOp(pos, f.binary("stablehlo.xor", key, u32(0x80000000)), f.unary("stablehlo.not", key)), ir.Float32)
}

// exactSelection emits update.ExactThreshold's answer for one unit of n
// scores delta with positions pos: the threshold Q and tie end such that
// Δ > Q || (Δ == Q && pos < tieEnd) keeps exactly min(k, n) entries — the
// k largest, ties at the lowest positions — or, when fewer than k scores
// are numbers, every number (Q = -Inf); k = 0 keeps nothing (Q = +Inf).
//
// It sorts the (ordered key, position) pairs by key, largest first,
// stably — so equal keys stay in position order — and reads the k-th:
// one sort per unit, which XLA on GPU runs as a radix sort.
func exactSelection(f *fn, delta, pos value, k, n int64) (q, tieEnd value) {
	if k <= 0 {
		return f.scalarConst(ir.Float32, math.Inf(1)), f.scalarConst(ir.Int64, 0)
	}
	kk := int(min(k, n))
	key := orderedKey(f, delta)
	u32, pt := scalarType(ir.Uint32), scalarType(pos.dtype())
	cmp := f.region([]ir.Type{u32, u32, pt, pt}, func(r *fn, a []value) []value {
		return []value{r.compare("GT", a[0], a[1])}
	})
	sorted := f.op("stablehlo.sort", []value{key, pos}, "dimension = 0 : i64, is_stable = true", []string{cmp}, key.t, pos.t)
	kth := f.reshape(f.slice(sorted[0], []int{kk - 1}, []int{kk}, []int{1}), ir.Shape{})
	kthPos := f.convert(f.reshape(f.slice(sorted[1], []int{kk - 1}, []int{kk}, []int{1}), ir.Shape{}), ir.Int64)
	isNaN := f.compare("EQ", kth, f.scalarConst(ir.Uint32, 0))
	q = f.selectOp(isNaN, f.scalarConst(ir.Float32, math.Inf(-1)), keyValue(f, kth))
	tieEnd = f.selectOp(isNaN, f.scalarConst(ir.Int64, 0), f.add(kthPos, f.scalarConst(ir.Int64, 1)))
	return q, tieEnd
}
