package dst

import (
	"encoding/json"
	"math"
	"slices"
	"testing"
)

func TestSubsetSize(t *testing.T) {
	cases := []struct {
		eps  float64
		n, k int64
	}{
		{0, 100, 0}, {0, 0, 0}, {0.5, 0, 0},
		{1e-3, 1000, 1}, {1e-3, 1499, 1}, {1e-3, 1500, 2}, {1e-3, 2499, 2}, {1e-3, 2500, 3}, // halves round up
		{1e-6, 10, 1}, // never 0 for ε > 0
		{1, 7, 7}, {0.999999, 7, 7},
		{0.25, 10, 3}, // 2.5 rounds away from zero
		{1e-4, 1 << 40, 109951163},
	}
	for _, c := range cases {
		if got := SubsetSize(c.eps, c.n); got != c.k {
			t.Errorf("SubsetSize(%g, %d) = %d, want %d", c.eps, c.n, got, c.k)
		}
	}
	for _, bad := range []float64{-0.1, 1.5, math.NaN()} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("SubsetSize(%g, 10) did not panic", bad)
				}
			}()
			SubsetSize(bad, 10)
		}()
	}
}

func TestParseOptions(t *testing.T) {
	good := DefaultOptions()
	o, err := ParseOptions(nil, 5)
	if err != nil || o.Threshold != ThresholdIterative || o.Distance != DistanceInvRel || o.Bisection().Steps != 3 || o.Seed != 5 {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
	back, err := ParseOptions(good.JSON(), 5)
	if err != nil || back != o {
		t.Fatalf("round trip: %+v, %v; want %+v", back, err, o)
	}
	if _, err := ParseOptions(json.RawMessage(`{"eps":0.1,"colour":"red"}`), 0); err == nil {
		t.Error("an unknown field was accepted")
	}
	for name, f := range map[string]func(c *Options){
		"eps":       func(c *Options) { c.Eps = 1.5 },
		"eps NaN":   func(c *Options) { c.Eps = math.NaN() },
		"distance":  func(c *Options) { c.Distance = "cosine" },
		"silo":      func(c *Options) { c.Silo = "layer" },
		"threshold": func(c *Options) { c.Threshold = "approx" },
		"normalize": func(c *Options) { c.Normalize = "max" },
		"random":    func(c *Options) { c.Distance, c.Normalize = DistanceRandom, NormalizeSize },
		"paper":     func(c *Options) { c.PaperAlg2, c.Normalize = true, NormalizeMean },
		"m":         func(c *Options) { c.RefineSteps = 0 },
		"r":         func(c *Options) { c.Factor = 1 },
	} {
		c := good
		f(&c)
		if err := c.Check(); err == nil {
			t.Errorf("%s: no error for %+v", name, c)
		}
	}
}

func TestMakeSilos(t *testing.T) {
	params := []string{"a", "b", "c", "d"}
	mods := map[string]Module{"a": {Kind: "x.weight"}, "b": {Kind: "y.weight"}, "c": {Kind: "x.weight"}, "d": {Kind: "y.bias"}}
	got, err := MakeSilos(SiloModule, params, mods)
	want := []Silo{{"x.weight", []string{"a", "c"}}, {"y.weight", []string{"b"}}, {"y.bias", []string{"d"}}}
	if err != nil || !slices.EqualFunc(got, want, func(a, b Silo) bool { return a.Name == b.Name && slices.Equal(a.Params, b.Params) }) {
		t.Fatalf("module silos %v, %v", got, err)
	}
	if got, _ := MakeSilos(SiloNone, params, nil); len(got) != 1 || !slices.Equal(got[0].Params, params) {
		t.Fatalf("none: %v", got)
	}
	if got, _ := MakeSilos(SiloModuleLayer, params, nil); len(got) != 4 || got[2].Name != "c" {
		t.Fatalf("module-layer: %v", got)
	}
	if _, err := MakeSilos(SiloModule, params, nil); err == nil {
		t.Fatal("module silos without modules: no error")
	}
	if _, err := MakeSilos("layer", params, nil); err == nil {
		t.Fatal("unknown mode: no error")
	}
}
