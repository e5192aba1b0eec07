package ir

import (
	"fmt"

	"github.com/dstune/dstune/onnx"
)

// Normalizations that transformer exporters write, imported as
// compositions of element-wise ops and a mean (the fused LayerNorm op
// stays for LayerNormalization itself).

func init() {
	registerOp("", "RMSNormalization", importRMSNorm("Scale", false))
}

// importRMSNorm: RMSNormalization (opset 23),
// Y = X / sqrt(mean(X², axes axis..rank-1) + epsilon) · Scale, the mean
// computed in stash_type (float32) or X's type when that is wider; and
// onnxruntime's SimplifiedLayerNormalization, the same with the scale
// input spelled "scale" and the inverse root mean square as a second
// output (withInvStd).
func importRMSNorm(scaleName string, withInvStd bool) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		if err := wantIn(in, 2, 2); err != nil {
			return nil, err
		}
		x, scale := in[0], in[1]
		if _, err := sameFloatInputs([]string{"X", scaleName}, x, scale); err != nil {
			return nil, err
		}
		axis, err := attrAxis(n, -1, len(x.Shape))
		if err != nil {
			return nil, err
		}
		eps, err := n.AttrFloat("epsilon", 1e-5)
		if err != nil {
			return nil, err
		}
		stash, err := stashType(n)
		if err != nil {
			return nil, err
		}
		if err := checkNormScale(scaleName, scale.Shape, x.Shape[axis:]); err != nil {
			return nil, err
		}
		c := &composer{im: im}
		y, invStd := c.rmsNorm(x, scale, axis, float64(eps), stash)
		if withInvStd {
			return []*Value{y, invStd}, c.err
		}
		return []*Value{y}, c.err
	}
}

// stashType reads a normalization's stash_type: the float type its
// statistics are computed in (at least; a wider input keeps its own).
func stashType(n *onnx.Node) (DType, error) {
	code, err := n.AttrInt("stash_type", int64(onnx.Float))
	if err != nil {
		return 0, err
	}
	dt, err := DTypeFromONNX(onnx.DataType(code))
	if err != nil || !isFloat(dt) {
		return 0, fmt.Errorf("stash_type %d, want a float type", code)
	}
	return dt, nil
}

// checkNormScale checks that a scale or bias of a normalization over the
// trailing dimensions norm broadcasts to them without growing them.
func checkNormScale(what string, s, norm Shape) error {
	if b, err := BroadcastShapes(s, norm); err != nil || len(s) > len(norm) || !b.Equal(norm) {
		return fmt.Errorf("%s has shape %v, want one broadcastable to the normalized dimensions %v", what, s, norm)
	}
	return nil
}

// computeType is the type statistics of x are computed in: stash, or x's
// own type when that is wider (float64 stays float64).
func computeType(x, stash DType) DType {
	if x == Float64 || stash == Float64 {
		return Float64
	}
	if x.narrowFloat() && stash.narrowFloat() {
		return x
	}
	return Float32
}

// rmsNorm is x / sqrt(mean(x², axes axis..) + eps) · scale (scale may be
// nil), the normalization computed in computeType(x, stash) and the
// scaling in x's type; invRMS is the inverse root mean square it divides
// by (in the computation's type, the normalized axes kept as 1).
func (c *composer) rmsNorm(x, scale *Value, axis int, eps float64, stash DType) (y, invRMS *Value) {
	if c.err != nil {
		return nil, nil
	}
	dt := x.DType
	xc := c.cast(x, computeType(dt, stash))
	axes := make([]int, 0, len(x.Shape)-axis)
	for d := axis; d < len(x.Shape); d++ {
		axes = append(axes, d)
	}
	meanSq := c.op(&Reduce{Fn: ReduceMean, Axes: axes, KeepDims: true}, c.mul(xc, xc))
	if c.err != nil {
		return nil, nil
	}
	invRMS = c.unary(Reciprocal, c.unary(Sqrt, c.add(meanSq, c.scalar(meanSq.DType, eps))))
	y = c.cast(c.mul(xc, invRMS), dt)
	if scale != nil {
		y = c.mul(y, scale)
	}
	return y, invRMS
}
