package ir

import (
	"testing"

	"github.com/dstune/dstune/onnx"
)

// refRotary rotates x4 [B, H, S, D] (float64) by the angles whose cosines
// and sines cos(b, s, i) and sin(b, s, i) give, pair i being channels
// (i, i+rd/2), or (2i, 2i+1) when interleaved.
func refRotary(x4 *Tensor, rd int, interleaved bool, cos, sin func(b, s, i int) float64) *Tensor {
	bsz, heads, seq, d := x4.Shape()[0], x4.Shape()[1], x4.Shape()[2], x4.Shape()[3]
	out := x4.Clone()
	for b := range bsz {
		for h := range heads {
			for s := range seq {
				base := ((b*heads+h)*seq + s) * d
				for i := range rd / 2 {
					j1, j2 := i, i+rd/2
					if interleaved {
						j1, j2 = 2*i, 2*i+1
					}
					x1, x2 := x4.Float64At(base+j1), x4.Float64At(base+j2)
					c, sn := cos(b, s, i), sin(b, s, i)
					out.Float64s()[base+j1] = c*x1 - sn*x2
					out.Float64s()[base+j2] = sn*x1 + c*x2
				}
			}
		}
	}
	return out
}

// TestRotaryEmbedding compares RotaryEmbedding (4-D and 3-D input, with
// and without position_ids, halves and interleaved pairs, a partial
// rotary dimension) with refRotary and checks the gradients of the input
// and both caches by central differences.
func TestRotaryEmbedding(t *testing.T) {
	for _, c := range []struct {
		name        string
		x           Shape
		heads       int
		rotaryDim   int
		interleaved bool
		positions   bool
	}{
		{"4d-positions", Shape{2, 2, 3, 4}, 0, 0, false, true},
		{"4d-positions-interleaved-partial", Shape{1, 2, 3, 6}, 0, 4, true, true},
		{"3d-no-positions", Shape{2, 3, 8}, 2, 0, false, false},
		{"3d-no-positions-interleaved-partial", Shape{1, 3, 12}, 2, 2, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newOpModel(t, 23, 11)
			bsz, seq, d := c.x[0], c.x[2], 0
			if len(c.x) == 3 {
				seq, d = c.x[1], c.x[2]/c.heads
			} else {
				d = c.x[3]
			}
			rd := c.rotaryDim
			if rd == 0 {
				rd = d
			}
			in := []string{m.param("X", c.x, -1, 1), "", ""}
			var pos *Tensor
			if c.positions {
				in[1], in[2] = m.param("cos", Shape{7, rd / 2}, -1, 1), m.param("sin", Shape{7, rd / 2}, -1, 1)
				pos = NewTensor(Int64, Shape{bsz, seq})
				for i := range pos.Int64s() {
					pos.Int64s()[i] = int64((5*i + 3) % 7)
				}
				in = append(in, m.init("pos", pos))
			} else {
				in[1], in[2] = m.param("cos", Shape{bsz, seq, rd / 2}, -1, 1), m.param("sin", Shape{bsz, seq, rd / 2}, -1, 1)
			}
			var attrs []*onnx.Attribute
			if c.heads > 0 {
				attrs = append(attrs, intAttr("num_heads", int64(c.heads)))
			}
			if c.rotaryDim > 0 {
				attrs = append(attrs, intAttr("rotary_embedding_dim", int64(c.rotaryDim)))
			}
			if c.interleaved {
				attrs = append(attrs, intAttr("interleaved", 1))
			}
			m.add("RotaryEmbedding", in, []string{"Y"}, attrs...)
			m.outputs = []string{"Y"}
			g, res := m.run()
			x, cosT, sinT := m.tensor("X"), m.tensor("cos"), m.tensor("sin")
			table := func(tab *Tensor) func(b, s, i int) float64 {
				if pos != nil {
					return func(b, s, i int) float64 { return at(tab, int(pos.Int64At(b*seq+s)), i) }
				}
				return func(b, s, i int) float64 { return at(tab, b, s, i) }
			}
			x4 := x
			if len(c.x) == 3 {
				x4 = headsOf(x, c.heads)
			}
			want := refRotary(x4, rd, c.interleaved, table(cosT), table(sinT))
			if len(c.x) == 3 {
				want = mergedOf(want)
			}
			if d := Compare(res["Y"], want, 1e-12, 1e-12); !d.OK() {
				t.Errorf("Y: %v", d)
			}
			checkGradFD(t, g, 1e-6)
		})
	}
}

func TestRotaryEmbeddingImportErrors(t *testing.T) {
	rotary := func(x, cache Shape, pos Shape, attrs ...*onnx.Attribute) func(m *opModel) {
		return func(m *opModel) {
			in := []string{m.param("X", x, 0, 1), m.param("cos", cache, 0, 1), m.param("sin", cache, 0, 1)}
			if pos != nil {
				in = append(in, m.init("pos", NewTensor(Int64, pos)))
			}
			m.add("RotaryEmbedding", in, []string{"Y"}, attrs...)
			m.outputs = []string{"Y"}
		}
	}
	checkImportErrors(t, 23, []importError{
		{"3d-without-heads", rotary(Shape{1, 3, 8}, Shape{1, 3, 4}, nil), "the num_heads attribute is required"},
		{"3d-heads-not-dividing", rotary(Shape{1, 3, 8}, Shape{1, 3, 4}, nil, intAttr("num_heads", 3)), "not a multiple of num_heads 3"},
		{"rank-2", rotary(Shape{3, 8}, Shape{3, 4}, nil), "want rank 3 or 4"},
		{"odd-rotary-dim", rotary(Shape{1, 1, 3, 8}, Shape{1, 3, 2}, nil, intAttr("rotary_embedding_dim", 3)), "rotary_embedding_dim 3, want an even number"},
		{"rotary-dim-too-big", rotary(Shape{1, 1, 3, 8}, Shape{1, 3, 5}, nil, intAttr("rotary_embedding_dim", 10)), "no larger than the head size 8"},
		{"heads-disagree", rotary(Shape{1, 2, 3, 8}, Shape{1, 3, 4}, nil, intAttr("num_heads", 4)), "num_heads 4, but X"},
		{"cache-shape-no-positions", rotary(Shape{1, 2, 3, 8}, Shape{1, 4, 4}, nil), "without position_ids the caches are [batch, seq, rotary_dim/2] = [1,3,4]"},
		{"cache-shape-positions", rotary(Shape{1, 2, 3, 8}, Shape{10, 3}, Shape{1, 3}), "with position_ids the caches are [max_position, 4]"},
		{"positions-shape", rotary(Shape{1, 2, 3, 8}, Shape{10, 4}, Shape{3}), "position_ids is int64[3], want int64 [1,3]"},
		{"interleaved-not-boolean", rotary(Shape{1, 2, 3, 8}, Shape{1, 3, 4}, nil, intAttr("interleaved", 3)), "interleaved is 3"},
		{"caches-differ", func(m *opModel) {
			m.add("RotaryEmbedding", []string{m.param("X", Shape{1, 1, 3, 8}, 0, 1), m.param("cos", Shape{1, 3, 4}, 0, 1), m.param("sin", Shape{1, 3, 3}, 0, 1)}, []string{"Y"})
			m.outputs = []string{"Y"}
		}, "cos_cache [1,3,4] and sin_cache [1,3,3] differ"},
	})
}
