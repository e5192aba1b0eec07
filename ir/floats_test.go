package ir

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// The onnx package converts half floats with bit manipulation, this one by
// rounding on the format's grid: two independent implementations that must
// agree everywhere.

func TestFloat16AgainstOnnxPackage(t *testing.T) {
	for h := range 1 << 16 {
		a, b := Float16ToFloat32(uint16(h)), onnx.HalfToFloat32(uint16(h))
		if math.Float32bits(a) != math.Float32bits(b) && !(a != a && b != b) {
			t.Fatalf("Float16ToFloat32(%#04x) = %v, onnx says %v", h, a, b)
		}
		if a == a { // round trip of every non-NaN code
			if back := Float32ToFloat16(a); back != uint16(h) {
				t.Fatalf("Float32ToFloat16(%v) = %#04x, want %#04x", a, back, h)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 1))
	special := []float32{0, -0.0, 65504, 65519.996, 65520, -65520, 1e-8, 2.9802322e-08, 2.9802326e-08, 5.96e-8, 6.1035156e-05,
		float32(math.Inf(1)), float32(math.Inf(-1)), 1 + 1.0/2048, 1 + 3.0/2048}
	for i := range 200000 {
		var f float32
		switch {
		case i < len(special):
			f = special[i]
		case i%2 == 0:
			f = math.Float32frombits(rng.Uint32())
		default:
			f = float32(rng.NormFloat64() * math.Pow(2, float64(rng.IntN(40)-25)))
		}
		a, b := Float32ToFloat16(f), onnx.Float32ToHalf(f)
		if f != f {
			if a&0x7c00 != 0x7c00 || a&0x3ff == 0 {
				t.Fatalf("Float32ToFloat16(NaN) = %#04x", a)
			}
			continue
		}
		if a != b {
			t.Fatalf("Float32ToFloat16(%v) = %#04x, onnx says %#04x", f, a, b)
		}
	}
}

func TestBFloat16AgainstOnnxPackage(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	for i := range 200000 {
		f := math.Float32frombits(rng.Uint32())
		if i < 1<<16 {
			f = BFloat16ToFloat32(uint16(i))
			if g := onnx.BFloat16ToFloat32(uint16(i)); math.Float32bits(f) != math.Float32bits(g) {
				t.Fatalf("BFloat16ToFloat32(%#04x) = %v, onnx says %v", i, f, g)
			}
		}
		a, b := Float32ToBFloat16(f), onnx.Float32ToBFloat16(f)
		if a != b {
			t.Fatalf("Float32ToBFloat16(%v) = %#04x, onnx says %#04x", f, a, b)
		}
		// The float64 path rounds once, like the float32 one.
		if f == f {
			if c := Float64ToBFloat16(float64(f)); c != a {
				t.Fatalf("Float64ToBFloat16(%v) = %#04x, want %#04x", f, c, a)
			}
		}
	}
}

// nearestCode is the brute-force reference for the 8-bit (and 4-bit)
// float formats: the finite code closest to x, ties to the even code.
func nearestCode(dt DType, x float64) (code byte, dist float64) {
	tab := byteFloatTables[dt]
	limit := 256
	if dt == Float4E2M1 {
		limit = 16
	}
	dist = math.Inf(1)
	for c := range limit {
		v := float64(tab[c])
		if v != v || math.IsInf(v, 0) {
			continue
		}
		d := math.Abs(v - x)
		if d < dist || (d == dist && c%2 == 0 && code%2 == 1) {
			code, dist = byte(c), d
		}
	}
	return code, dist
}

func TestSmallFloatFormats(t *testing.T) {
	maxima := map[DType]float64{Float8E4M3FN: 448, Float8E4M3FNUZ: 240, Float8E5M2: 57344, Float8E5M2FNUZ: 57344, Float4E2M1: 6}
	rng := rand.New(rand.NewPCG(3, 3))
	for dt, maxv := range maxima {
		t.Run(dt.String(), func(t *testing.T) {
			tab := byteFloatTables[dt]
			largest := 0.0
			limit := 256
			if dt == Float4E2M1 {
				limit = 16
			}
			for c := range limit {
				v := float64(tab[c])
				if v != v || math.IsInf(v, 0) {
					continue
				}
				largest = math.Max(largest, v)
				// Every finite code survives a round trip (except -0 in
				// the formats without one, which is NaN there).
				if got := float64ToSmallFloat(dt, v, true, RoundUp); got != byte(c) && !(v == 0 && tab[got] == 0) {
					t.Errorf("code %#02x = %v encodes back as %#02x", c, v, got)
				}
			}
			if largest != maxv {
				t.Errorf("largest finite value %v, want %v", largest, maxv)
			}
			for range 20000 {
				x := rng.NormFloat64() * math.Pow(2, float64(rng.IntN(24)-14))
				if math.Abs(x) > maxv {
					continue
				}
				want, _ := nearestCode(dt, x)
				got := float64ToSmallFloat(dt, x, true, RoundUp)
				if float64(tab[got]) != float64(tab[want]) {
					t.Fatalf("%v: got code %#02x (%v), nearest is %#02x (%v)", x, got, tab[got], want, tab[want])
				}
			}
			// Saturation: out-of-range values clamp; without it they become
			// Inf (E5M2) or NaN.
			if got := tab[float64ToSmallFloat(dt, 10*maxv, true, RoundUp)]; float64(got) != maxv {
				t.Errorf("saturating 10·max gave %v", got)
			}
			if dt != Float4E2M1 {
				got := float64(tab[float64ToSmallFloat(dt, 10*maxv, false, RoundUp)])
				if dt == Float8E5M2 {
					if !math.IsInf(got, 1) {
						t.Errorf("non-saturating overflow gave %v, want +Inf", got)
					}
				} else if got == got {
					t.Errorf("non-saturating overflow gave %v, want NaN", got)
				}
			}
		})
	}
}

func TestE8M0(t *testing.T) {
	for _, tc := range []struct {
		x    float64
		mode RoundMode
		want float64
	}{
		{1, RoundUp, 1}, {3, RoundUp, 4}, {3, RoundDown, 2}, {3, RoundNearest, 4}, {2.9, RoundNearest, 2},
		{0.3, RoundUp, 0.5}, {1024, RoundDown, 1024},
	} {
		got := smallFloatToFloat32(Float8E8M0, encodeE8M0(tc.x, true, tc.mode))
		if float64(got) != tc.want {
			t.Errorf("e8m0(%v, mode %d) = %v, want %v", tc.x, tc.mode, got, tc.want)
		}
	}
}
