package conformance

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// Graphs with random operators cannot reproduce the reference's outputs:
// those come from someone else's random numbers. checkRandom checks what
// the operators determine instead, on the reference's outputs and on
// ours alike: dtype and shape, the values' range, and statistics within
// four standard deviations of what the distribution gives.

// randomOps are the ONNX operators whose outputs are random.
var randomOps = map[string]bool{"Bernoulli": true, "RandomUniform": true, "RandomUniformLike": true, "RandomNormal": true, "RandomNormalLike": true}

// randomNodes lists the random operators of g (subgraphs included).
func randomNodes(g *onnx.Graph) []*onnx.Node {
	var out []*onnx.Node
	for _, n := range g.Nodes {
		if (n.Domain == "" || n.Domain == "ai.onnx") && randomOps[n.OpType] {
			out = append(out, n)
		}
		for _, a := range n.Attributes {
			if a.Type == onnx.AttrGraph && a.G != nil {
				out = append(out, randomNodes(a.G)...)
			}
		}
	}
	return out
}

// randomLaw is what an output's elements are drawn from: Bernoulli with
// per-element probabilities p, uniform on [low, high), or normal.
type randomLaw struct {
	bernoulli   []float64
	uniform     bool
	low, high   float64
	normal      bool
	mean, scale float64
}

// checkRandom checks every output of a graph with random operators; known
// holds the graph inputs' values.
func checkRandom(g *onnx.Graph, random []*onnx.Node, known map[string]*ir.Tensor, got, want map[string]*ir.Datum) error {
	producer := map[string]*onnx.Node{}
	for _, n := range g.Nodes {
		for _, o := range n.Outputs {
			producer[o] = n
		}
	}
	for _, o := range g.Outputs {
		w, gt := want[o.Name], got[o.Name]
		if w.Kind != ir.TensorDatum || gt.Kind != ir.TensorDatum {
			return fmt.Errorf("output %q: a random %s is not checked", o.Name, w.Kind)
		}
		if gt.Tensor.DType() != w.Tensor.DType() || !gt.Tensor.Shape().Equal(w.Tensor.Shape()) {
			return fmt.Errorf("output %q: got %v, want %v", o.Name, gt.Tensor, w.Tensor)
		}
		law, err := lawOf(o.Name, producer, known)
		if err != nil {
			return fmt.Errorf("output %q: %w", o.Name, err)
		}
		if err := law.check(w.Tensor); err != nil {
			return fmt.Errorf("output %q: reference: %w", o.Name, err)
		}
		if err := law.check(gt.Tensor); err != nil {
			return fmt.Errorf("output %q: dstune: %w", o.Name, err)
		}
	}
	return nil
}

// lawOf derives the distribution of value name from its producers:
// Bernoulli(p); RandomUniform(Like) and RandomNormal(Like) themselves; and
// Bernoulli's expansion, a cast of Greater or Less comparing a uniform
// draw with known probabilities. Casts keep the law.
func lawOf(name string, producer map[string]*onnx.Node, known map[string]*ir.Tensor) (randomLaw, error) {
	n := producer[name]
	if n == nil {
		return randomLaw{}, fmt.Errorf("%q depends on no random operator this check knows", name)
	}
	floatAttr := func(attr string, def float32) float64 {
		v, _ := n.AttrFloat(attr, def)
		return float64(v)
	}
	switch n.OpType {
	case "Cast", "Identity":
		return lawOf(n.Inputs[0], producer, known)
	case "Bernoulli":
		p := known[n.Inputs[0]]
		if p == nil {
			return randomLaw{}, fmt.Errorf("Bernoulli's probabilities %q are not a graph input", n.Inputs[0])
		}
		law := randomLaw{bernoulli: make([]float64, p.Len())}
		for i := range law.bernoulli {
			law.bernoulli[i] = p.Float64At(i)
		}
		return law, nil
	case "RandomUniform", "RandomUniformLike":
		return randomLaw{uniform: true, low: floatAttr("low", 0), high: floatAttr("high", 1)}, nil
	case "RandomNormal", "RandomNormalLike":
		return randomLaw{normal: true, mean: floatAttr("mean", 0), scale: floatAttr("scale", 1)}, nil
	case "Greater", "Less":
		u, err := lawOf(n.Inputs[0], producer, known)
		x := known[n.Inputs[1]]
		if err != nil || !u.uniform || x == nil {
			return randomLaw{}, fmt.Errorf("%s of %q and %q is not a uniform draw compared with a graph input", n.OpType, n.Inputs[0], n.Inputs[1])
		}
		law := randomLaw{bernoulli: make([]float64, x.Len())}
		for i := range law.bernoulli {
			below := math.Min(math.Max((x.Float64At(i)-u.low)/(u.high-u.low), 0), 1) // P(U < x)
			if n.OpType == "Greater" {
				below = 1 - below
			}
			law.bernoulli[i] = below
		}
		return law, nil
	}
	return randomLaw{}, fmt.Errorf("%q comes from %s, which this check does not follow to a random operator", name, n.OpType)
}

// check tests t against the law: range and, within four standard
// deviations (plus one element's worth), its mean (and spread).
func (l randomLaw) check(t *ir.Tensor) error {
	n := t.Len()
	if n == 0 {
		return nil
	}
	nf := float64(n)
	sum, sumSq := 0.0, 0.0
	for i := range n {
		v := t.Float64At(i)
		sum += v
		sumSq += v * v
	}
	mean := sum / nf
	switch {
	case l.bernoulli != nil:
		if len(l.bernoulli) != n {
			return fmt.Errorf("%d probabilities for %d elements", len(l.bernoulli), n)
		}
		expect, variance := 0.0, 0.0
		for i, p := range l.bernoulli {
			v := t.Float64At(i)
			if v != 0 && v != 1 {
				return fmt.Errorf("element %d is %g, want 0 or 1", i, v)
			}
			if (p == 0 && v != 0) || (p == 1 && v != 1) {
				return fmt.Errorf("element %d is %g with probability %g of being 1", i, v, p)
			}
			expect += p
			variance += p * (1 - p)
		}
		if math.Abs(sum-expect) > 4*math.Sqrt(variance)+1 {
			return fmt.Errorf("%g ones of %d, implausible where %.3g are expected", sum, n, expect)
		}
	case l.uniform:
		for i := range n {
			if v := t.Float64At(i); v < l.low || v > l.high || math.IsNaN(v) {
				return fmt.Errorf("element %d is %g, outside [%g, %g)", i, v, l.low, l.high)
			}
		}
		sd := (l.high - l.low) / math.Sqrt(12*nf)
		if math.Abs(mean-(l.low+l.high)/2) > 4*sd+(l.high-l.low)/nf {
			return fmt.Errorf("mean %g, implausible for uniform [%g, %g)", mean, l.low, l.high)
		}
	case l.normal:
		if math.Abs(mean-l.mean) > 4*l.scale/math.Sqrt(nf)+l.scale/nf {
			return fmt.Errorf("mean %g, implausible for normal(%g, %g)", mean, l.mean, l.scale)
		}
		if n > 1 {
			sd := math.Sqrt(math.Max(sumSq/nf-mean*mean, 0) * nf / (nf - 1))
			if math.Abs(sd-l.scale) > 4*l.scale/math.Sqrt(2*(nf-1))+l.scale/nf {
				return fmt.Errorf("standard deviation %g, implausible for normal(%g, %g)", sd, l.mean, l.scale)
			}
		}
	}
	return nil
}
