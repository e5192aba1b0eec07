package kernels

import (
	"fmt"
	"strings"
	"testing"
)

// TestElemArgumentChecks: short slices, small strides and bad sizes panic
// with a "kernels: " message before any work, rather than reading or
// writing out of bounds.
func TestElemArgumentChecks(t *testing.T) {
	s4, s8 := make([]float32, 4), make([]float32, 8)
	for i, call := range []func(){
		func() { AddF32(s8, s4, s8) },
		func() { MulF32(s8, s8, s4) },
		func() { ExpF32(s8, s4) },
		func() { GeluBackwardF32(s8, s8, s4) },
		func() { Softmax(1, 2, 4, s8, 4, s4, 4) },
		func() { Softmax(1, 2, 4, s8, 3, s8, 4) },
		func() { LogSoftmax(1, -1, 4, s8, 4, s8, 4) },
		func() { AttentionSoftmax(1, 2, 2, 2, s8, 2, s8, 2, 1, s4[:3], 2, false) },
		func() { AttentionSoftmax(1, -1, 2, 2, s8, 2, s8, 2, 1, nil, 0, false) },
		func() { SoftmaxCrossEntropy(1, 2, 4, s8, 4, []int32{0}, -1, nil, 0, 1) },
		func() { SoftmaxCrossEntropy(1, 2, 4, s8, 4, []int32{0, 4}, -1, nil, 0, 1) },
		func() { SoftmaxCrossEntropy(1, 2, 4, s8, 4, []int32{0, 1}, -1, s4, 4, 1) },
		func() { LayerNorm(1, 2, 4, s8, 4, s8, 4, s4, s4[:3], 1e-5, nil, nil) },
		func() { LayerNorm(1, 2, 4, s8, 4, s8, 4, s4, s4, 1e-5, s4[:1], nil) },
		func() { LayerNormBackward(1, 2, 4, s8, 4, s8, 4, s8, 4, s4, s4[:2], s4[:2], s4, nil) },
		func() { LayerNormBackward(1, 2, 4, s8, 4, s8, 4, s8, 4, s4, s4[:1], s4[:2], nil, nil) },
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			defer func() {
				r := recover()
				msg, ok := r.(string)
				if !ok || !strings.HasPrefix(msg, "kernels: ") {
					t.Fatalf("panic value %#v, want a \"kernels: \" message", r)
				}
			}()
			call()
		})
	}
}
