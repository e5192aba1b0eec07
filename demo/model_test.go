package demo

import (
	"bytes"
	"math"
	"testing"

	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// referenceLogits computes the demo GPT's logits in float64 straight from
// the architecture BuildModel documents, reading the weights by name:
// embeddings, pre-LayerNorm blocks with causal multi-head attention and a
// tanh-GELU MLP, the final LayerNorm and the LM head tied to wte.
func referenceLogits(w map[string][]float32, c ModelConfig, tokens []int64) [][]float64 {
	d, T := c.Dim, len(tokens)
	vec := func(name string) []float64 {
		out := make([]float64, len(w[name]))
		for i, v := range w[name] {
			out[i] = float64(v)
		}
		return out
	}
	layerNorm := func(x []float64, name string) []float64 {
		g, b := vec(name+".weight"), vec(name+".bias")
		var mean, variance float64
		for _, v := range x {
			mean += v
		}
		mean /= float64(d)
		for _, v := range x {
			variance += (v - mean) * (v - mean)
		}
		variance /= float64(d)
		out := make([]float64, d)
		for i, v := range x {
			out[i] = (v-mean)/math.Sqrt(variance+1e-5)*g[i] + b[i]
		}
		return out
	}
	linear := func(x []float64, name string) []float64 { // weight [in, out]
		W, b := vec(name+".weight"), vec(name+".bias")
		out := append([]float64(nil), b...)
		for i, xi := range x {
			for j := range out {
				out[j] += xi * W[i*len(out)+j]
			}
		}
		return out
	}
	wte, wpe := vec("wte.weight"), vec("wpe.weight")
	x := make([][]float64, T)
	for t, tok := range tokens {
		x[t] = make([]float64, d)
		for i := range d {
			x[t][i] = wte[int(tok)*d+i] + wpe[t*d+i]
		}
	}
	dh := d / c.Heads
	for l := range c.Layers {
		p := "h." + string(rune('0'+l)) + "."
		q, k, v := make([][]float64, T), make([][]float64, T), make([][]float64, T)
		for t := range T {
			a := layerNorm(x[t], p+"ln_1")
			q[t], k[t], v[t] = linear(a, p+"attn.q"), linear(a, p+"attn.k"), linear(a, p+"attn.v")
		}
		for t := range T {
			ctx := make([]float64, d)
			for h := range c.Heads {
				scores := make([]float64, t+1) // causal: keys 0..t
				maxScore := math.Inf(-1)
				for j := range t + 1 {
					for i := h * dh; i < (h+1)*dh; i++ {
						scores[j] += q[t][i] * k[j][i]
					}
					scores[j] /= math.Sqrt(float64(dh))
					maxScore = math.Max(maxScore, scores[j])
				}
				var sum float64
				for j := range scores {
					scores[j] = math.Exp(scores[j] - maxScore)
					sum += scores[j]
				}
				for j := range scores {
					for i := h * dh; i < (h+1)*dh; i++ {
						ctx[i] += scores[j] / sum * v[j][i]
					}
				}
			}
			out := linear(ctx, p+"attn.out")
			for i := range d {
				x[t][i] += out[i]
			}
		}
		for t := range T {
			f := linear(layerNorm(x[t], p+"ln_2"), p+"mlp.fc")
			for i, u := range f {
				f[i] = 0.5 * u * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(u+0.044715*u*u*u)))
			}
			out := linear(f, p+"mlp.proj")
			for i := range d {
				x[t][i] += out[i]
			}
		}
	}
	logits := make([][]float64, T)
	for t := range T {
		h := layerNorm(x[t], "ln_f")
		logits[t] = make([]float64, c.Vocab)
		for j := range c.Vocab {
			for i := range d {
				logits[t][j] += h[i] * wte[j*d+i]
			}
		}
	}
	return logits
}

// modelLogits runs model on one row of tokens with dstune's executor.
func modelLogits(t *testing.T, model *ir.Model, tokens []int64) []float32 {
	t.Helper()
	exe, err := compileFor(model, 1, len(tokens), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer exe.Close()
	in := ir.NewTensor(ir.Int64, ir.Shape{1, len(tokens)})
	copy(in.Int64s(), tokens)
	out, err := exe.Run([]*ir.Tensor{in})
	if err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), out[0].Float32s()...)
}

func weights(t *testing.T, m *onnx.Model) map[string][]float32 {
	t.Helper()
	w := map[string][]float32{}
	for _, it := range m.Graph.Initializers {
		v, err := it.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		w[it.Name] = v
	}
	return w
}

// TestModelMatchesReference: the ONNX graph BuildModel writes computes
// the documented architecture (float64 reference), for the shipped trained
// model and for an untrained model of another size.
func TestModelMatchesReference(t *testing.T) {
	small := ModelConfig{Vocab: 16, Dim: 12, Heads: 3, Layers: 1, Hidden: 20, Positions: 9, Seed: 7}
	untrained, err := BuildModel(small)
	if err != nil {
		t.Fatal(err)
	}
	// Larger weights than the N(0, 0.02) init, so that every part of the
	// network moves the logits.
	for _, it := range untrained.Graph.Initializers {
		v, _ := it.Float32s()
		for i := range v {
			v[i] = v[i]*40 + float32(i%7)*0.01
		}
		nt, _ := onnx.FromFloat32s(it.Name, it.Dims, v)
		*it = *nt
	}
	buf, err := onnx.Encode(untrained)
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := onnx.Decode(buf, "")
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := onnx.Decode(BaseModel, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		m      *onnx.Model
		cfg    ModelConfig
		tokens []int64
	}{
		{"untrained small", decoded, small, []int64{3, 15, 0, 7, 7, 2, 9, 11, 1}},
		{"shipped base", shipped, DefaultModel, Reverse.Example([]byte("qwert")).Tokens()},
	} {
		model, err := ir.NewModel(c.m)
		if err != nil {
			t.Fatal(err)
		}
		got := modelLogits(t, model, c.tokens)
		want := referenceLogits(weights(t, c.m), c.cfg, c.tokens)
		var maxErr, maxAbs float64
		for pos := range want {
			for j, w := range want[pos] {
				maxErr = math.Max(maxErr, math.Abs(float64(got[pos*c.cfg.Vocab+j])-w))
				maxAbs = math.Max(maxAbs, math.Abs(w))
			}
		}
		t.Logf("%s: max |executor − float64 reference| = %.2g (logits up to %.3g)", c.name, maxErr, maxAbs)
		if maxErr > 1e-4*math.Max(1, maxAbs) || maxAbs < 1 {
			t.Errorf("%s: logits off by %g (largest %g)", c.name, maxErr, maxAbs)
		}
	}
}

func TestBuildModelDeterministic(t *testing.T) {
	a, err := BuildModel(DefaultModel)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := BuildModel(DefaultModel)
	other := DefaultModel
	other.Seed++
	c, _ := BuildModel(other)
	ea, _ := onnx.Encode(a)
	eb, _ := onnx.Encode(b)
	ec, _ := onnx.Encode(c)
	if !bytes.Equal(ea, eb) || bytes.Equal(ea, ec) {
		t.Errorf("same seed equal: %v, other seed equal: %v", bytes.Equal(ea, eb), bytes.Equal(ea, ec))
	}
	// The init's statistics: matrices N(0, 0.02).
	w, _ := a.Graph.Initializer("h.0.mlp.fc.weight").Float32s()
	var sum, sq float64
	for _, v := range w {
		sum += float64(v)
		sq += float64(v) * float64(v)
	}
	mean, std := sum/float64(len(w)), math.Sqrt(sq/float64(len(w)))
	if math.Abs(mean) > 1e-3 || math.Abs(std-0.02) > 1e-3 {
		t.Errorf("h.0.mlp.fc.weight: mean %g, std %g, want N(0, 0.02)", mean, std)
	}
	for _, bad := range []ModelConfig{{}, {Vocab: 16, Dim: 10, Heads: 3, Layers: 1, Hidden: 4, Positions: 4}} {
		if _, err := BuildModel(bad); err == nil {
			t.Errorf("BuildModel(%+v) accepted", bad)
		}
	}
}
