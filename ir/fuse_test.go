package ir

import (
	"math"
	"testing"
)

func TestFuseGelu(t *testing.T) {
	x := NewTensor(Float32, Shape{2, 5})
	for i := range x.Float32s() {
		x.Float32s()[i] = float32(i)/2 - 2.5
	}
	half, one := ScalarFloat32(0.5), ScalarFloat32(1)
	build := func(pattern string, exposeErf bool) *Graph {
		b := NewBuilder("g")
		in := b.Input("x", Float32, Shape{2, 5})
		var scaled *Value
		if pattern == "mul" {
			scaled = b.Op1(&Binary{Fn: Mul}, in, b.Const(ScalarFloat32(float32(1/math.Sqrt2))))
		} else {
			scaled = b.Op1(&Binary{Fn: Div}, in, b.Const(ScalarFloat32(float32(math.Sqrt2))))
		}
		e := b.Op1(&Unary{Fn: Erf}, scaled)
		a := b.Op1(&Binary{Fn: Add}, b.Const(one), e)
		var y *Value
		if pattern == "half-first" {
			h := b.Op1(&Binary{Fn: Mul}, in, b.Const(half))
			y = b.Op1(&Binary{Fn: Mul}, h, a)
		} else {
			m := b.Op1(&Binary{Fn: Mul}, in, a)
			y = b.Op1(&Binary{Fn: Mul}, m, b.Const(half))
		}
		b.Output("y", y)
		if exposeErf {
			b.Output("erf", e)
		}
		g, err := b.Graph()
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	for _, pattern := range []string{"div", "mul", "half-first"} {
		for _, expose := range []bool{false, true} {
			g := build(pattern, expose)
			want, err := Interpret(g, map[string]*Tensor{"x": x})
			if err != nil {
				t.Fatal(err)
			}
			fuseGelu(g)
			g.relinkUses()
			if err := g.Validate(); err != nil {
				t.Fatal(err)
			}
			fused := len(g.Nodes) == 1 && g.Nodes[0].Op.Name() == "Gelu"
			if fused == expose {
				t.Errorf("%s (erf also an output: %v): fused %v:\n%v", pattern, expose, fused, g)
			}
			got, err := Interpret(g, map[string]*Tensor{"x": x})
			if err != nil {
				t.Fatal(err)
			}
			if d := Compare(got["y"], want["y"], 1e-6, 1e-7); !d.OK() {
				t.Errorf("%s: fused result differs: %v", pattern, d)
			}
		}
	}
}
