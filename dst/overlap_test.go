package dst

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func subset(name string, size int64, idx ...int64) TensorDelta {
	return TensorDelta{Name: name, Dims: []int64{size}, Indices: idx, Values: make([]float32, len(idx))}
}

func TestSubsetOverlapKnown(t *testing.T) {
	a := &Delta{Tensors: []TensorDelta{subset("w", 10, 1, 2, 3, 4), subset("v", 5, 0), subset("onlyA", 3, 0, 1, 2)}}
	b := &Delta{Tensors: []TensorDelta{subset("w", 10, 3, 4, 5), subset("v", 5, 0), subset("onlyB", 3, 2)}}
	r, err := SubsetOverlap(a, b)
	if err != nil {
		t.Fatal(err)
	}
	want := []TensorOverlap{
		{Tensor: "onlyA", InA: 3, InB: 0, Both: 0},
		{Tensor: "onlyB", InA: 0, InB: 1, Both: 0},
		{Tensor: "v", InA: 1, InB: 1, Both: 1},
		{Tensor: "w", InA: 4, InB: 3, Both: 2},
	}
	if len(r.Tensors) != len(want) {
		t.Fatalf("got %+v", r.Tensors)
	}
	for i := range want {
		if r.Tensors[i] != want[i] {
			t.Errorf("tensor %d: %+v, want %+v", i, r.Tensors[i], want[i])
		}
	}
	fractions := map[string]float64{"onlyA": 0, "v": 1, "w": 0.5}
	for _, o := range r.Tensors {
		if f, ok := fractions[o.Tensor]; ok && o.Fraction() != f {
			t.Errorf("%s: overlap %v, want %v", o.Tensor, o.Fraction(), f)
		}
	}
	if !math.IsNaN(r.Tensors[1].Fraction()) {
		t.Errorf("tensor only B changes: overlap %v, want NaN", r.Tensors[1].Fraction())
	}
	if r.Total != (TensorOverlap{InA: 8, InB: 5, Both: 3}) || r.Total.Fraction() != 3.0/8 {
		t.Errorf("total %+v (%v), want 3 of 8", r.Total, r.Total.Fraction())
	}
	// Not symmetric: |A| is the denominator.
	rb, _ := SubsetOverlap(b, a)
	if rb.Total.Fraction() != 3.0/5 {
		t.Errorf("B vs A: %v, want 3/5", rb.Total.Fraction())
	}
	self, _ := SubsetOverlap(a, a)
	if self.Total.Fraction() != 1 {
		t.Errorf("A vs A: %v, want 1", self.Total.Fraction())
	}
}

func TestSubsetOverlapRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	sizes := map[string]int64{"a": 100, "b": 1000, "c": 3}
	for range 30 {
		a, b := randomDeltaFor(rng, sizes, 0.3), randomDeltaFor(rng, sizes, 0.1)
		r, err := SubsetOverlap(a, b)
		if err != nil {
			t.Fatal(err)
		}
		inB := map[string]map[int64]bool{}
		for _, td := range b.Tensors {
			inB[td.Name] = map[int64]bool{}
			for _, x := range td.Indices {
				inB[td.Name][x] = true
			}
		}
		var both, total int64
		for _, td := range a.Tensors {
			for _, x := range td.Indices {
				total++
				if inB[td.Name][x] {
					both++
				}
			}
		}
		if r.Total.Both != both || r.Total.InA != total || r.Total.InB != b.NumChanged() {
			t.Fatalf("total %+v, want both %d of %d", r.Total, both, total)
		}
	}
}

func TestSubsetOverlapDimsMismatch(t *testing.T) {
	a := &Delta{Tensors: []TensorDelta{subset("w", 10, 1)}}
	b := &Delta{Tensors: []TensorDelta{subset("w", 12, 1)}}
	if _, err := SubsetOverlap(a, b); err == nil || !strings.Contains(err.Error(), `"w"`) {
		t.Errorf("err = %v, want one naming tensor \"w\"", err)
	}
}

// BenchmarkSubsetOverlap compares two deltas of many one-entry tensors,
// as a delta of a model with many small initializers has: the time per
// tensor should not grow with the number of tensors.
func BenchmarkSubsetOverlap(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("tensors=%d", n), func(b *testing.B) {
			a, c := &Delta{}, &Delta{}
			for i := range n {
				name := fmt.Sprintf("t%06d", i)
				a.Tensors = append(a.Tensors, subset(name, 4, int64(i%4)))
				c.Tensors = append(c.Tensors, subset(name, 4, int64((i+i/4)%4)))
			}
			b.ReportAllocs()
			for b.Loop() {
				r, err := SubsetOverlap(a, c)
				if err != nil || len(r.Tensors) != n {
					b.Fatalf("%d tensors compared, err %v", len(r.Tensors), err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/tensor")
		})
	}
}
