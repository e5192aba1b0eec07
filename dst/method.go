package dst

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/train"
	"github.com/dstune/dstune/update"
)

// Method is --method dst, a train.Method: after every optimizer step every
// silo S keeps exactly k = SubsetSize(ε, |S|) entries — those whose
// distance Δ from the seed is largest, never one whose Δ is 0 (fewer
// when fewer Δ are positive) — and resets the others to the seed (the
// paper's Algorithm 1). The optimizer's state is updated from the
// full step Θ̂, as the paper does.
//
// The method decides what is selected and reads what was: Prepare turns
// the options and the trainable parameters into an update.Selection — one
// unit per silo with its k, the distance, the threshold mode with
// Algorithm 2's m and r, the random mask or a subset fixed after the first
// step, and for --normalize one unit over every parameter whose pieces
// carry their silo's factor 1/c_S — which every training backend lowers
// (package update defines the selection step; accel/cpu and accel/tpu run
// it). Metrics, State and Delta turn what the backend reports and holds
// into the run's metrics records, checkpoint state and delta file, the
// same for every backend.
type Method struct {
	opts     Options
	modules  map[string]Module
	baseHash string

	params []*ir.Param
	silos  []Silo
	sizes  []int64 // entries per silo
	sel    *update.Selection
	pieces map[string]int // entries per parameter

	// halfSeeds are the stored values of the parameters a half-precision
	// model keeps in float16 or bfloat16 (trained as float32): their
	// delta values are written in that dtype.
	halfSeeds map[string]Initializer
}

var (
	_ train.Method        = (*Method)(nil)
	_ train.RunFileWriter = (*Method)(nil)
)

// NewMethod returns a DST method. modules (Modules of the model's graph)
// is needed for module silos only; baseHash (BaseHash of the base model's
// initializers, "" when unknown) goes into the delta files.
func NewMethod(opts Options, modules map[string]Module, baseHash string) (*Method, error) {
	if err := opts.Check(); err != nil {
		return nil, err
	}
	if opts.Silo == SiloModule && modules == nil {
		return nil, fmt.Errorf("dst: --silo module needs the model's graph to tell module kinds apart")
	}
	if opts.BandCap == 0 {
		opts.BandCap = DefaultBandCap
	}
	return &Method{opts: opts, modules: modules, baseHash: baseHash}, nil
}

// Name is "dst".
func (m *Method) Name() string { return train.MethodDST }

// Options returns the method's options.
func (m *Method) Options() Options { return m.opts }

// Silos lists the method's silos (after Prepare).
func (m *Method) Silos() []Silo { return m.silos }

// Selection is the selection Prepare made.
func (m *Method) Selection() *update.Selection { return m.sel }

// Prepare makes the silos of the trainable parameters and the selection
// over them; with the random distance it also chooses the mask, which the
// returned state holds.
func (m *Method) Prepare(params []*ir.Param) (*update.Selection, *update.SelectionState, error) {
	m.params = params
	m.pieces = map[string]int{}
	names := make([]string, len(params))
	for i, p := range params {
		n := p.Tensor.Len()
		if int64(n) > math.MaxInt32 {
			return nil, nil, fmt.Errorf("dst: parameter %q has %d entries; DST handles tensors of fewer than 2^31", p.Name, n)
		}
		names[i] = p.Name
		m.pieces[p.Name] = n
	}
	silos, err := MakeSilos(m.opts.Silo, names, m.modules)
	if err != nil {
		return nil, nil, fmt.Errorf("dst: %w", err)
	}
	m.silos, m.sizes = silos, make([]int64, len(silos))
	for i, s := range silos {
		for _, name := range s.Params {
			m.sizes[i] += int64(m.pieces[name])
		}
	}
	o := m.opts
	m.sel = &update.Selection{Distance: o.distance(), Exact: o.Threshold == ThresholdExact, Bisection: o.Bisection(),
		BandCap: o.BandCap, Fixed: o.fixing(), PaperAlg2: o.PaperAlg2}
	if o.Normalize != NormalizeNone {
		m.sel.Normalized = true
		m.sel.Units = []update.Unit{m.normalizedUnit()}
		for _, s := range silos {
			m.sel.Groups = append(m.sel.Groups, s.Name)
		}
	} else {
		for i, s := range silos {
			u := update.Unit{Name: s.Name, K: SubsetSize(o.Eps, m.sizes[i])}
			for _, name := range s.Params {
				u.Pieces = append(u.Pieces, update.Piece{Param: name})
			}
			m.sel.Units = append(m.sel.Units, u)
		}
	}
	if err := m.sel.Check(m.pieces); err != nil {
		return nil, nil, fmt.Errorf("dst: %w", err)
	}
	if o.Distance != DistanceRandom {
		return m.sel, nil, nil
	}
	st := update.NewSelectionState(m.sel)
	for _, u := range m.sel.Units {
		m.randomMask(u, st)
	}
	st.Fixed = true
	return m.sel, st, nil
}

// normalizedUnit is the one selection of a normalized run over every
// parameter in order, each piece scaled by fl32(1/c_S) of its silo: c_S is
// the silo's parameter count (size) or the mean |Θ0| of its entries (mean;
// a silo of zero seeds takes the mean over all trainable parameters
// instead, 1 if that is 0 too), summed in float64.
func (m *Method) normalizedUnit() update.Unit {
	siloOf := map[string]int{}
	for i, s := range m.silos {
		for _, name := range s.Params {
			siloOf[name] = i
		}
	}
	// Running float64 sums over the entries in order.
	addAbs := func(sum float64, p *ir.Param) float64 {
		for _, x := range p.Tensor.Float32s() {
			sum += math.Abs(float64(x))
		}
		return sum
	}
	byName := map[string]*ir.Param{}
	var total float64
	var size int64
	for _, p := range m.params {
		byName[p.Name] = p
		total = addAbs(total, p)
		size += int64(p.Tensor.Len())
	}
	overallMean := 1.0
	if size > 0 && total > 0 {
		overallMean = total / float64(size)
	}
	scales := make([]float32, len(m.silos))
	for i, s := range m.silos {
		c := float64(m.sizes[i])
		if m.opts.Normalize == NormalizeMean {
			var sum float64
			for _, name := range s.Params {
				sum = addAbs(sum, byName[name])
			}
			c = overallMean
			if sum > 0 {
				c = sum / float64(m.sizes[i])
			}
		}
		if m.sizes[i] == 0 {
			c = 1 // no entries to scale
		}
		scales[i] = float32(1 / c)
	}
	u := update.Unit{Name: "all", K: SubsetSize(m.opts.Eps, size)}
	for _, p := range m.params {
		g := siloOf[p.Name]
		u.Pieces = append(u.Pieces, update.Piece{Param: p.Name, Scale: scales[g], Group: g})
	}
	return u
}

// randomMask chooses a unit's k free entries uniformly at random, once:
// the paper's random baseline. The choice depends only on the seed, the
// silo's name and its size (Floyd's sampling of k distinct positions from
// a PCG stream seeded by (seed, FNV-1a of the name)).
func (m *Method) randomMask(u update.Unit, st *update.SelectionState) {
	var size int64
	for _, p := range u.Pieces {
		size += int64(m.pieces[p.Param])
	}
	h := fnv.New64a()
	h.Write([]byte(u.Name))
	rng := rand.New(rand.NewPCG(m.opts.Seed, h.Sum64()))
	chosen := make([]uint64, (size+63)/64)
	for j := size - u.K; j < size; j++ {
		t := rng.Int64N(j + 1)
		if chosen[t/64]>>(t%64)&1 != 0 {
			t = j
		}
		chosen[t/64] |= 1 << (t % 64)
	}
	var off int64
	for _, p := range u.Pieces {
		kept := []int32{}
		for pos := range m.pieces[p.Param] {
			if b := off + int64(pos); chosen[b/64]>>(b%64)&1 != 0 {
				kept = append(kept, int32(pos))
			}
		}
		st.Kept[p.Param] = kept
		off += int64(m.pieces[p.Param])
	}
}
