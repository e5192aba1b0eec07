package ir

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// bruteEinsum is the einsum definition written out: one loop over every
// combination of every label's index, with no planning. An axis of size 1
// stays at index 0 (broadcast); a label repeated within a term indexes each
// of its axes alike (the diagonal). Integers multiply and add in int64,
// wrapping; floats in float64.
func bruteEinsum(op *Einsum, in []*Tensor, size map[rune]int, float bool) ([]float64, []int64) {
	var labels []rune
	for _, t := range append([]string{op.Output}, op.Inputs...) {
		for _, r := range t {
			if !strings.ContainsRune(string(labels), r) {
				labels = append(labels, r)
			}
		}
	}
	dims := make([]int, len(labels))
	total := 1
	for i, r := range labels {
		dims[i] = size[r]
		total *= dims[i]
	}
	outShape := Shape{}
	for _, r := range op.Output {
		outShape = append(outShape, size[r])
	}
	fres := make([]float64, outShape.Size())
	ires := make([]int64, outShape.Size())
	idx := map[rune]int{}
	for step := range total {
		rest := step
		for i := len(labels) - 1; i >= 0; i-- {
			idx[labels[i]] = rest % dims[i]
			rest /= dims[i]
		}
		fp, ip := 1.0, int64(1)
		for k, t := range in {
			off, st := 0, t.shape.Strides()
			for d, r := range op.Inputs[k] {
				if t.shape[d] != 1 {
					off += idx[r] * st[d]
				}
			}
			fp *= t.Float64At(off)
			ip *= t.Int64At(off)
		}
		o, st := 0, outShape.Strides()
		for d, r := range op.Output {
			o += idx[r] * st[d]
		}
		fres[o] += fp
		ires[o] += ip
	}
	if float {
		return fres, nil
	}
	return nil, ires
}

// randomEinsum draws an equation over up to five labels of sizes 0 to 3:
// one to four operands of rank 0 to 3 whose labels may repeat (diagonals)
// and whose axes may have size 1 where the label is larger (broadcast),
// and an output of distinct labels drawn from the operands'.
func randomEinsum(rng *rand.Rand) (eq string, shapes []Shape) {
	size := map[byte]int{}
	for _, r := range []byte("abcde") {
		size[r] = rng.IntN(4)
	}
	var terms []string
	used := ""
	for range 1 + rng.IntN(4) {
		term := ""
		var shape Shape
		for range rng.IntN(4) {
			r := "abcde"[rng.IntN(5)]
			term += string(r)
			if rng.IntN(4) == 0 {
				shape = append(shape, 1)
			} else {
				shape = append(shape, size[r])
			}
			if strings.IndexByte(used, r) < 0 {
				used += string(r)
			}
		}
		terms = append(terms, term)
		shapes = append(shapes, shape)
	}
	out := ""
	for _, r := range []byte(used) {
		if rng.IntN(2) == 0 {
			out += string(r)
		}
	}
	return strings.Join(terms, ",") + "->" + out, shapes
}

// TestEinsumReferenceAgainstDefinition: the reference's planned
// contraction gives what the definition's loop over every label gives, for
// random equations with diagonals, broadcast axes and summed labels, in
// float64 and in integers that wrap.
func TestEinsumReferenceAgainstDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for range 400 {
		eq, shapes := randomEinsum(rng)
		ranks := make([]int, len(shapes))
		for i, s := range shapes {
			ranks[i] = len(s)
		}
		op, err := ParseEinsum(eq, ranks)
		if err != nil {
			t.Fatalf("%s: %v", eq, err)
		}
		for _, dt := range []DType{Float64, Int64, Int32, Uint8} {
			in := make([]*Tensor, len(shapes))
			for i, s := range shapes {
				if dt == Float64 {
					in[i] = randTensor(rng, dt, s, -1, 1)
					continue
				}
				in[i] = NewTensor(Int64, s)
				for j := range in[i].Int64s() {
					// Large enough that products wrap.
					in[i].Int64s()[j] = rng.Int64() >> rng.IntN(64)
				}
				in[i] = Convert(in[i], dt)
			}
			got, err := EvalOp(op, in...)
			if err != nil {
				t.Fatalf("%s %v on %s: %v", eq, shapes, dt, err)
			}
			size, err := op.sizes(typesOf(in))
			if err != nil {
				t.Fatal(err)
			}
			fwant, iwant := bruteEinsum(op, in, size, dt == Float64)
			for i := range got[0].Len() {
				if dt == Float64 {
					g, w := got[0].Float64s()[i], fwant[i]
					if math.Abs(g-w) > 1e-12*(1+math.Abs(w)) {
						t.Fatalf("%s %v: element %d is %g, want %g", eq, shapes, i, g, w)
					}
					continue
				}
				want := NewTensor(dt, Shape{1})
				storeInt(want, 0, iwant[i], false, RoundUp)
				if g, w := got[0].Int64At(i), want.Int64At(0); g != w {
					t.Fatalf("%s %v on %s: element %d is %d, want %d", eq, shapes, dt, i, g, w)
				}
			}
		}
	}
}

// evalWithin evaluates op, failing the test if it takes longer than limit
// (the evaluation is left running: a hang is what this catches).
func evalWithin(t *testing.T, limit time.Duration, op Op, in ...*Tensor) ([]*Tensor, error) {
	t.Helper()
	type result struct {
		out []*Tensor
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := EvalOp(op, in...)
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		return r.out, r.err
	case <-time.After(limit):
		t.Fatalf("%s still running after %v", op.Name(), limit)
		return nil, nil
	}
}

// TestEinsumReferenceWorkIsBounded: operands sharing no label are summed
// each on its own before they are multiplied, so six vectors of 100 take
// hundreds of steps, not 100⁶; the same holds where a diagonal or an axis
// broadcast from 1 keeps the Einsum from being lowered.
func TestEinsumReferenceWorkIsBounded(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	sum := func(x *Tensor) float64 {
		s := 0.0
		for i := range x.Len() {
			s += x.Float64At(i)
		}
		return s
	}
	t.Run("a,b,c,d,e,f->", func(t *testing.T) {
		var in []*Tensor
		want := int64(1)
		for range 6 {
			x := NewTensor(Int64, Shape{100})
			s := int64(0)
			for i := range x.Int64s() {
				x.Int64s()[i] = rng.Int64N(7) - 3
				s += x.Int64s()[i]
			}
			in = append(in, x)
			want *= s
		}
		op, err := ParseEinsum("a,b,c,d,e,f->", []int{1, 1, 1, 1, 1, 1})
		if err != nil {
			t.Fatal(err)
		}
		got, err := evalWithin(t, 10*time.Second, op, in...)
		if err != nil {
			t.Fatal(err)
		}
		if g := got[0].Int64s()[0]; g != want {
			t.Errorf("got %d, want %d", g, want)
		}
	})
	t.Run("ii,a,b,c,d->", func(t *testing.T) {
		in := []*Tensor{randTensor(rng, Float32, Shape{2, 2}, -1, 1)}
		for range 4 {
			in = append(in, randTensor(rng, Float32, Shape{300}, -1, 1))
		}
		want := in[0].Float64At(0) + in[0].Float64At(3)
		for _, x := range in[1:] {
			want *= sum(x)
		}
		op, err := ParseEinsum("ii,a,b,c,d->", []int{2, 1, 1, 1, 1})
		if err != nil {
			t.Fatal(err)
		}
		got, err := evalWithin(t, 10*time.Second, op, in...)
		if err != nil {
			t.Fatal(err)
		}
		if g := got[0].Float64At(0); math.Abs(g-want) > 1e-4*(1+math.Abs(want)) {
			t.Errorf("got %g, want %g", g, want)
		}
	})
	t.Run("ai,bi,ci,di->", func(t *testing.T) {
		// The first operand's i is broadcast from 1: the result is
		// Σ_i (Σ_a x0[a,0]) (Σ_b x1[b,i]) (Σ_c x2[c,i]) (Σ_d x3[d,i]).
		in := []*Tensor{randTensor(rng, Float64, Shape{300, 1}, -1, 1)}
		for range 3 {
			in = append(in, randTensor(rng, Float64, Shape{300, 3}, -1, 1))
		}
		want := 0.0
		for i := range 3 {
			p := sum(in[0])
			for _, x := range in[1:] {
				s := 0.0
				for a := range 300 {
					s += x.Float64At(a*3 + i)
				}
				p *= s
			}
			want += p
		}
		op, err := ParseEinsum("ai,bi,ci,di->", []int{2, 2, 2, 2})
		if err != nil {
			t.Fatal(err)
		}
		got, err := evalWithin(t, 10*time.Second, op, in...)
		if err != nil {
			t.Fatal(err)
		}
		if g := got[0].Float64At(0); math.Abs(g-want) > 1e-9*(1+math.Abs(want)) {
			t.Errorf("got %g, want %g", g, want)
		}
	})
}

// TestEinsumIterationCountBeyondInt: sixteen vectors of 16 span 16¹⁶ = 2⁶⁴
// label combinations, a count that wraps to 0 in an int; the result is
// still the first vector times the other fifteen's sums.
func TestEinsumIterationCountBeyondInt(t *testing.T) {
	rng := rand.New(rand.NewPCG(25, 26))
	labels := "abcdefghijklmnop"
	var in []*Tensor
	var terms []string
	ranks := make([]int, len(labels))
	scale := int64(1)
	for k := range labels {
		x := NewTensor(Int64, Shape{16})
		s := int64(0)
		for i := range x.Int64s() {
			x.Int64s()[i] = rng.Int64N(5) - 1
			s += x.Int64s()[i]
		}
		if k > 0 {
			scale *= s
		}
		in = append(in, x)
		terms = append(terms, labels[k:k+1])
		ranks[k] = 1
	}
	op, err := ParseEinsum(strings.Join(terms, ",")+"->a", ranks)
	if err != nil {
		t.Fatal(err)
	}
	got, err := evalWithin(t, 10*time.Second, op, in...)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 16 {
		if g, w := got[0].Int64s()[i], in[0].Int64s()[i]*scale; g != w {
			t.Errorf("element %d is %d, want %d", i, g, w)
		}
	}
}

// TestEinsumRefusesUnboundedWork: where even the planned contraction
// needs more multiply-adds than one evaluation may take, Eval says so and
// names the equation instead of running for minutes. Here three operands
// broadcast along different axes multiply out to 2048³ products.
func TestEinsumRefusesUnboundedWork(t *testing.T) {
	const n = 2048
	in := []*Tensor{
		filled(Float32, Shape{n, 1, 1}, 1),
		filled(Float32, Shape{1, n, 1}, 1),
		filled(Float32, Shape{1, 1, n}, 1),
	}
	op, err := ParseEinsum("ijk,ijk,ijk->", []int{3, 3, 3})
	if err != nil {
		t.Fatal(err)
	}
	_, err = evalWithin(t, 20*time.Second, op, in...)
	if err == nil || !strings.Contains(err.Error(), `"ijk,ijk,ijk->"`) || !strings.Contains(err.Error(), "multiply-adds") {
		t.Fatalf("got error %v, want one naming the equation and its multiply-adds", err)
	}
}

// TestParseEinsumRefusals: equations numpy and onnxruntime refuse — an
// output repeating a label, and operands with ellipsis dimensions whose
// explicit output has no "..." — are refused; an ellipsis that stands for
// no dimension needs none in the output.
func TestParseEinsumRefusals(t *testing.T) {
	for _, c := range []struct {
		eq    string
		ranks []int
		ok    bool
	}{
		{"i->ii", []int{1}, false},
		{"ij,jk->ikk", []int{2, 2}, false},
		{"...ij->ij", []int{3}, false},
		{"i...->i", []int{2}, false},
		{"...ij,...jk->ik", []int{3, 3}, false},
		{"...ij->ij", []int{2}, true},
		{"...ij->...ji", []int{3}, true},
		{"i,i->i", []int{1, 1}, true},
	} {
		op, err := ParseEinsum(c.eq, c.ranks)
		if err == nil {
			types := make([]Type, len(c.ranks))
			for i, r := range c.ranks {
				types[i] = Type{Float32, make(Shape, r)}
				for d := range r {
					types[i].Shape[d] = 2
				}
			}
			_, err = op.Infer(types)
		}
		if (err == nil) != c.ok {
			t.Errorf("%s on ranks %v: error %v, want ok %v", c.eq, c.ranks, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), c.eq) {
			t.Errorf("%s: error %q does not name the equation", c.eq, err)
		}
	}
}
