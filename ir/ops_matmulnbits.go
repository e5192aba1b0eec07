package ir

import (
	"fmt"

	"github.com/dstune/dstune/onnx"
)

// onnxruntime's com.microsoft MatMulNBits: Y = A · dequant(B)ᵀ (+ bias),
// B an [N, K] weight quantized block-wise along K to bits-bit codes.
// The weight is dequantized once, at import, into a constant [K, N]
// float matrix of A's type, so the node runs as a plain MatMul and a model
// using it trains through its other parameters (the bias among them);
// the quantized weight and its scales stay as they are.

func init() {
	registerOp("com.microsoft", "MatMulNBits", importMatMulNBits)
	// B, scales and zero_points make the weight constant.
	registerStaticOperands("com.microsoft", "MatMulNBits", 1, 2, 3)
}

// importValue returns the value of input i known at import: a constant,
// or a parameter's current values (read once: what is computed from
// them is a constant and does not train). Nil when the input is absent.
func (im *importer) importValue(in []*Value, i int, what string) (*Tensor, error) {
	if i < len(in) && in[i] != nil && in[i].Kind == ParamValue {
		return in[i].Param.Tensor, nil
	}
	return im.constTensor(in, i, what)
}

// nbitsWeight describes a MatMulNBits weight: N rows of K codes of bits
// bits, in blocks of blockSize along K.
type nbitsWeight struct {
	k, n, bits, blockSize int
}

func (w nbitsWeight) blocks() int   { return (w.k + w.blockSize - 1) / w.blockSize }
func (w nbitsWeight) blobSize() int { return w.blockSize * w.bits / 8 }

// code returns bits-bit code j of a packed byte stream, codes stored
// low bits first.
func unpackCode(packed []byte, j, bits int) int {
	bit := j * bits
	return int(packed[bit/8]>>(bit%8)) & (1<<bits - 1)
}

func importMatMulNBits(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 3, 6); err != nil {
		return nil, err
	}
	a := in[0]
	var w nbitsWeight
	for _, at := range []struct {
		name string
		dst  *int
		def  int
	}{{"K", &w.k, 0}, {"N", &w.n, 0}, {"bits", &w.bits, 4}, {"block_size", &w.blockSize, 0}} {
		v, err := attrInt(n, at.name, at.def)
		if err != nil {
			return nil, err
		}
		*at.dst = v
	}
	switch {
	case w.k < 1 || w.n < 1:
		return nil, fmt.Errorf("attributes K %d and N %d, want positive sizes", w.k, w.n)
	case w.bits < 2 || w.bits > 8:
		return nil, fmt.Errorf("attribute bits is %d, want 2 to 8", w.bits)
	case 8%w.bits != 0:
		return nil, fmt.Errorf("%w: MatMulNBits with bits %d (2, 4 and 8 are)", ErrNotSupported, w.bits)
	case w.blockSize < 16 || w.blockSize&(w.blockSize-1) != 0:
		return nil, fmt.Errorf("attribute block_size is %d, want a power of two of at least 16", w.blockSize)
	}
	if p, err := attrInt(n, "weight_prepacked", 0); err != nil {
		return nil, err
	} else if p != 0 {
		return nil, fmt.Errorf("%w: MatMulNBits with weight_prepacked (a runtime's private layout)", ErrNotSupported)
	}
	if a.DType != Float32 && a.DType != Float16 && a.DType != BFloat16 {
		return nil, fmt.Errorf("input A is %s, want float32, float16 or bfloat16", a.DType)
	}
	if len(a.Shape) == 0 || a.Shape[len(a.Shape)-1] != w.k {
		return nil, fmt.Errorf("input A %v, want a last dimension of K = %d", a.Shape, w.k)
	}
	if err := checkShape(Shape{w.k, w.n}, a.DType.Size(), maxTensorBytes); err != nil {
		return nil, fmt.Errorf("weight of K %d by N %d: %w", w.k, w.n, err)
	}
	weight, err := im.dequantizeNBits(in, w, a.DType)
	if err != nil {
		return nil, err
	}
	y, err := im.emit1(&MatMul{}, a, im.constant(weight))
	if err != nil {
		return nil, err
	}
	bias := optIn(in, 5)
	if bias == nil {
		return []*Value{y}, nil
	}
	if bias.DType != a.DType || !bias.Shape.Equal(Shape{w.n}) {
		return nil, fmt.Errorf("bias is %v, want %s[%d]", bias.Type, a.DType, w.n)
	}
	return one(im.emit1(&Binary{Fn: Add}, y, bias))
}

// dequantizeNBits returns the weight dequant(B)ᵀ, [K, N] of type dt:
// element (k, n) is (code − zero point)·scale of its block, computed in
// float32 as onnxruntime does.
func (im *importer) dequantizeNBits(in []*Value, w nbitsWeight, dt DType) (*Tensor, error) {
	blocks, blob := w.blocks(), w.blobSize()
	b, err := im.importValue(in, 1, "B")
	if err != nil {
		return nil, err
	}
	if b.dtype != Uint8 || !b.shape.Equal(Shape{w.n, blocks, blob}) {
		return nil, fmt.Errorf("B is %s%v, want uint8[%d,%d,%d] (N, blocks of K, bytes per block)", b.dtype, b.shape, w.n, blocks, blob)
	}
	scales, err := im.importValue(in, 2, "scales")
	if err != nil {
		return nil, err
	}
	if scales.dtype != dt || scales.Len() != w.n*blocks {
		return nil, fmt.Errorf("scales are %s%v, want %d values of A's type %s (N·blocks)", scales.dtype, scales.shape, w.n*blocks, dt)
	}
	zeroPoint, err := nbitsZeroPoints(im, in, w, dt)
	if err != nil {
		return nil, err
	}
	if err := checkGIdx(in); err != nil {
		return nil, err
	}
	codes := b.Uint8s()
	out := NewTensor(Float32, Shape{w.k, w.n})
	o := out.Float32s()
	for n := range w.n {
		for k := range w.k {
			row := codes[(n*blocks+k/w.blockSize)*blob:][:blob]
			q := float32(unpackCode(row, k%w.blockSize, w.bits))
			s := n*blocks + k/w.blockSize
			o[k*w.n+n] = (q - zeroPoint(s)) * float32(scales.Float64At(s))
		}
	}
	return Convert(out, dt), nil
}

// nbitsZeroPoints returns the zero point of scale index s (row·blocks +
// block): from packed uint8 codes, from floats of A's type, or the
// midpoint 2^(bits−1) when there are none.
func nbitsZeroPoints(im *importer, in []*Value, w nbitsWeight, dt DType) (func(s int) float32, error) {
	zp, err := im.importValue(in, 3, "zero_points")
	if err != nil {
		return nil, err
	}
	blocks := w.blocks()
	switch {
	case zp == nil:
		mid := float32(int(1) << (w.bits - 1))
		return func(int) float32 { return mid }, nil
	case zp.dtype == Uint8:
		perRow := (blocks*w.bits + 7) / 8
		if zp.Len() != w.n*perRow {
			return nil, fmt.Errorf("zero_points are uint8%v, want %d packed bytes (N·ceil(blocks·bits/8))", zp.shape, w.n*perRow)
		}
		packed := zp.Uint8s()
		return func(s int) float32 {
			n, blk := s/blocks, s%blocks
			return float32(unpackCode(packed[n*perRow:][:perRow], blk, w.bits))
		}, nil
	case zp.dtype == dt:
		if zp.Len() != w.n*blocks {
			return nil, fmt.Errorf("zero_points are %s%v, want %d values (N·blocks)", zp.dtype, zp.shape, w.n*blocks)
		}
		return func(s int) float32 { return float32(zp.Float64At(s)) }, nil
	}
	return nil, fmt.Errorf("zero_points are %s, want packed uint8 or A's type %s", zp.dtype, dt)
}

// checkGIdx refuses the deprecated g_idx input (the block of each row of
// K): onnxruntime 1.30 computes other results for a model that carries
// it, even when it spells out the default k/block_size, so there is no
// reference to match.
func checkGIdx(in []*Value) error {
	if optIn(in, 4) != nil {
		return fmt.Errorf("%w: MatMulNBits with the deprecated g_idx input", ErrNotSupported)
	}
	return nil
}
