package tpu

import (
	"math"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/update"
)

// perParamSelection is a DST selection with one unit per parameter of tg
// (module-layer silos), in order, each keeping round(eps·n) (at least 1)
// entries; Algorithm 2 with m = 3, r = 2.
func perParamSelection(tg *ir.Graph, eps float64, d update.Distance) *update.Selection {
	s := &update.Selection{Distance: d, Bisection: update.DefaultBisection, BandCap: 64 << 10}
	for _, p := range tg.Params {
		n := int64(p.Value.Shape.Size())
		k := min(max(int64(math.Round(eps*float64(n))), 1), n)
		s.Units = append(s.Units, update.Unit{Name: p.Name, Pieces: []update.Piece{{Param: p.Name}}, K: k})
	}
	return s
}

// trainables lists tg's parameters as a trainer takes them.
func trainables(tg *ir.Graph) []*ir.Param {
	var ps []*ir.Param
	for _, p := range tg.Params {
		ps = append(ps, &ir.Param{Name: p.Name, Tensor: p.Tensor})
	}
	return ps
}
