// Package llamagen writes Llama-shaped ONNX decoders with random weights,
// shaped like what torch.onnx and Optimum export for Hugging Face's
// LlamaForCausalLM: rotary position embeddings computed in the graph from
// position_ids (Cast, Mul, Concat, Cos, Sin, Slice, Neg), RMSNorm spelled
// out (Pow, ReduceMean, Add, Sqrt, Reciprocal, Mul), grouped-query
// attention through Unsqueeze/Expand/Reshape, a causal and padding mask
// built from attention_mask, a SiLU-gated MLP, nn.Linear weights stored
// [out, in] and read through Transpose. Options add the past_key_values
// inputs and present outputs of a "with past" decoder, Optimum's merged
// decoder (an If on use_cache_branch choosing between the two), and
// half-precision initializers.
//
// The weights are written to an external-data file as they are drawn, so
// a model of billions of parameters never sits in memory. Tests use small
// configurations; the README's large-model figures come from
// `go run ./internal/llamagen/cmd/llamagen`.
package llamagen

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/dstune/dstune/onnx"
)

// Config sizes the model.
type Config struct {
	Vocab, Dim, Layers, Heads, KVHeads, Hidden int
	RopeTheta                                  float64 // default 10000
	RMSEps                                     float32 // default 1e-5
	// DType of the initializers and activations: onnx.Float (default),
	// onnx.Float16 or onnx.BFloat16. Half-precision models compute
	// RMSNorm and softmax in float32 as Hugging Face's Llama does.
	DType onnx.DataType
	// KVCache adds past_key_values.N.key/value inputs [batch, kv heads,
	// past, head dim] and present.N.key/value outputs.
	KVCache bool
	// Merged makes Optimum's merged decoder: a bool input
	// use_cache_branch selects (If) between the decoder with past and the
	// one without; both take the past inputs. Implies KVCache.
	Merged bool
	// Tied shares the embedding with the LM head (no lm_head.weight).
	Tied bool
	Seed uint64
}

// TinyLlama1B is the shape of TinyLlama-1.1B: 1.1 B parameters.
var TinyLlama1B = Config{Vocab: 32000, Dim: 2048, Layers: 22, Heads: 32, KVHeads: 4, Hidden: 5632}

// Params is the number of parameters c has.
func (c Config) Params() int64 {
	hd := int64(c.Dim / c.Heads)
	d, kv := int64(c.Dim), int64(c.KVHeads)*hd
	layer := d*d*2 + d*kv*2 + 3*d*int64(c.Hidden) + 2*d
	n := int64(c.Vocab)*d + int64(c.Layers)*layer + d
	if !c.Tied {
		n += int64(c.Vocab) * d
	}
	return n
}

func (c *Config) check() error {
	if c.RopeTheta == 0 {
		c.RopeTheta = 10000
	}
	if c.RMSEps == 0 {
		c.RMSEps = 1e-5
	}
	if c.DType == onnx.Undefined {
		c.DType = onnx.Float
	}
	if c.Merged {
		c.KVCache = true
	}
	switch {
	case c.Vocab < 2 || c.Dim < 1 || c.Layers < 1 || c.Heads < 1 || c.KVHeads < 1 || c.Hidden < 1:
		return fmt.Errorf("llamagen: every size must be positive: %+v", *c)
	case c.Dim%c.Heads != 0 || (c.Dim/c.Heads)%2 != 0:
		return fmt.Errorf("llamagen: width %d over %d heads must give an even head size", c.Dim, c.Heads)
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("llamagen: %d heads are not a multiple of %d key/value heads", c.Heads, c.KVHeads)
	case c.DType != onnx.Float && c.DType != onnx.Float16 && c.DType != onnx.BFloat16:
		return fmt.Errorf("llamagen: dtype %s: want float32, float16 or bfloat16", c.DType)
	}
	return nil
}

// Write writes dir/model.onnx and its external data dir/model.onnx.data.
func Write(dir string, c Config) error {
	if err := c.check(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	const dataName = "model.onnx.data"
	w := &weights{rng: normalSource{state: c.Seed}, dtype: c.DType, location: dataName}
	f, err := os.CreateTemp(dir, "."+dataName+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	w.out = bufio.NewWriterSize(f, 1<<20)
	m := build(c, w)
	if w.err == nil {
		w.err = w.out.Flush()
	}
	if w.err == nil {
		w.err = f.Close()
	} else {
		f.Close()
	}
	if w.err != nil {
		return fmt.Errorf("llamagen: writing %s: %w", dataName, w.err)
	}
	buf, err := onnx.Encode(m)
	if err != nil {
		return fmt.Errorf("llamagen: %w", err)
	}
	mf, err := os.CreateTemp(dir, ".model.onnx.tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(mf.Name())
	if _, err := mf.Write(buf); err != nil {
		mf.Close()
		return err
	}
	if err := mf.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, dataName)); err != nil {
		return err
	}
	return os.Rename(mf.Name(), filepath.Join(dir, "model.onnx"))
}

// weights streams initializer values into the external-data file.
type weights struct {
	rng      normalSource
	dtype    onnx.DataType
	location string
	out      *bufio.Writer
	offset   int64
	err      error
	inits    []*onnx.Tensor
}

// add draws n values (normal with std, or all equal to fill when std is
// 0) and appends the initializer.
func (w *weights) add(name string, dims []int64, std, fill float64) string {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	size := int64(4)
	if w.dtype != onnx.Float {
		size = 2
	}
	var b [4]byte
	for range n {
		v := fill
		if std != 0 {
			v = std * w.rng.next()
		}
		switch w.dtype {
		case onnx.Float:
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(float32(v)))
		case onnx.Float16:
			binary.LittleEndian.PutUint16(b[:], onnx.Float32ToHalf(float32(v)))
		case onnx.BFloat16:
			binary.LittleEndian.PutUint16(b[:], onnx.Float32ToBFloat16(float32(v)))
		}
		if w.err == nil {
			_, w.err = w.out.Write(b[:size])
		}
	}
	w.inits = append(w.inits, &onnx.Tensor{Name: name, DataType: w.dtype, Dims: dims,
		External: &onnx.ExternalData{Location: w.location, Offset: w.offset, Length: n * size}})
	w.offset += n * size
	// Keep every tensor 64-byte aligned in the file, as exporters do, so
	// that it can be used in place when mapped.
	for w.offset%64 != 0 {
		if w.err == nil {
			w.err = w.out.WriteByte(0)
		}
		w.offset++
	}
	return name
}

// normalSource draws standard normal numbers (SplitMix64 and Box–Muller),
// independent of math/rand's algorithms so a seed always gives the same
// model.
type normalSource struct {
	state uint64
	spare float64
	has   bool
}

func (s *normalSource) uniform() float64 {
	s.state += 0x9e3779b97f4a7c15
	z := s.state
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11+1) / (1 << 53)
}

func (s *normalSource) next() float64 {
	if s.has {
		s.has = false
		return s.spare
	}
	r := math.Sqrt(-2 * math.Log(s.uniform()))
	theta := 2 * math.Pi * s.uniform()
	s.spare, s.has = r*math.Sin(theta), true
	return r * math.Cos(theta)
}
