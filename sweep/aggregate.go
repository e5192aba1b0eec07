package sweep

import (
	"math"
	"slices"
	"sort"
	"strconv"
)

// Stat is the mean and sample standard deviation of n values (sd NaN
// for fewer than two).
type Stat struct {
	Mean, SD float64
	N        int
}

func statOf(x []float64) Stat {
	s := Stat{Mean: math.NaN(), SD: math.NaN(), N: len(x)}
	if len(x) == 0 {
		return s
	}
	var sum float64
	for _, v := range x {
		sum += v
	}
	s.Mean = sum / float64(len(x))
	if len(x) > 1 {
		var ss float64
		for _, v := range x {
			ss += (v - s.Mean) * (v - s.Mean)
		}
		s.SD = math.Sqrt(ss / float64(len(x)-1))
	}
	return s
}

// Setting is the runs of one configuration over its seeds.
type Setting struct {
	Params  Params // without the seed
	Results []*Result
	// Quality and Loss are over the runs that did not diverge; Base is
	// the quality of the model before training.
	Quality, Loss, Fraction, Free, Base Stat
	Diverged                            int
}

// Point is the settings that differ only in the learning rate, and the
// best of them.
type Point struct {
	Params   Params // without the learning rate and the seed
	Settings []*Setting
	// Best is the setting with the best mean quality among those whose
	// runs all finished without diverging (nil when none did).
	Best *Setting
}

// higherIsBetter says whether a larger quality is better.
func higherIsBetter(quality string) bool { return quality != QualityLoss }

// better reports whether quality a beats b.
func better(quality string, a, b float64) bool {
	if math.IsNaN(b) {
		return !math.IsNaN(a)
	}
	if higherIsBetter(quality) {
		return a > b
	}
	return a < b
}

// settings groups results by their settings without the seed, in the
// order of their first run.
func settings(results []*Result, quality string) []*Setting {
	var out []*Setting
	index := map[string]*Setting{}
	for _, r := range results {
		if r == nil {
			continue
		}
		p := r.params.Without(KeySeed)
		key := p.String()
		s := index[key]
		if s == nil {
			s = &Setting{Params: p}
			index[key] = s
			out = append(out, s)
		}
		s.Results = append(s.Results, r)
	}
	for _, s := range out {
		var q, l, f, free, base []float64
		for _, r := range s.Results {
			base = appendFinite(base, r.InitialValue(quality))
			if r.Status == StatusDiverged {
				s.Diverged++
				continue
			}
			q = appendFinite(q, r.Value(quality))
			l = appendFinite(l, r.Value(QualityLoss))
			f = append(f, r.Fraction)
			if r.FreeParams > 0 {
				free = append(free, float64(r.FreeParams))
			}
		}
		s.Quality, s.Loss, s.Fraction, s.Free, s.Base = statOf(q), statOf(l), statOf(f), statOf(free), statOf(base)
	}
	return out
}

func appendFinite(x []float64, v float64) []float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return x
	}
	return append(x, v)
}

// points groups settings by their settings without the learning rate and
// picks each point's best.
func points(ss []*Setting, quality string) []*Point {
	var out []*Point
	index := map[string]*Point{}
	for _, s := range ss {
		p := s.Params.Without(KeyLR)
		key := p.String()
		pt := index[key]
		if pt == nil {
			pt = &Point{Params: p}
			index[key] = pt
			out = append(out, pt)
		}
		pt.Settings = append(pt.Settings, s)
	}
	for _, pt := range out {
		sort.SliceStable(pt.Settings, func(i, j int) bool {
			return pt.Settings[i].Params.Float(KeyLR) < pt.Settings[j].Params.Float(KeyLR)
		})
		for _, s := range pt.Settings {
			if s.Diverged > 0 || s.Quality.N == 0 {
				continue
			}
			if pt.Best == nil || better(quality, s.Quality.Mean, pt.Best.Quality.Mean) {
				pt.Best = s
			}
		}
	}
	return out
}

// selectResults keeps the results whose settings match where: for every
// key, one of its values.
func selectResults(results []*Result, where map[string][]string) []*Result {
	var out []*Result
	for _, r := range results {
		if r != nil && matches(r.params, where) {
			out = append(out, r)
		}
	}
	return out
}

// matches reports whether p has, for every key of where, one of its
// values, equal as a number where both are numbers (1e-3 is 0.001).
func matches(p Params, where map[string][]string) bool {
	for k, vals := range where {
		v, ok := p.Get(k)
		if !ok || !slices.ContainsFunc(vals, func(w string) bool { return canonicalValue(w) == canonicalValue(v) }) {
			return false
		}
	}
	return true
}

// budgetKey is the setting that sets a method's budget ("" for full
// fine-tuning).
func budgetKey(method string) string {
	switch method {
	case "dst":
		return "eps"
	case "lora":
		return "rank"
	case "prompt":
		return "prompt-len"
	}
	return ""
}

// varyingOf lists the keys whose values differ among the given
// settings (in canonical order), leaving out those named.
func varyingOf(ps []Params, leave ...string) []string {
	keys := distinguishingKeys(ps)
	var out Params
	for _, k := range keys {
		if !slices.Contains(leave, k) {
			out = append(out, Param{Key: k})
		}
	}
	sortParams(out)
	names := make([]string, len(out))
	for i, kv := range out {
		names[i] = kv.Key
	}
	return names
}

// compareValues orders two values of one setting: numerically when both
// are numbers, else as strings.
func compareValues(a, b string) int {
	fa, ea := strconv.ParseFloat(a, 64)
	fb, eb := strconv.ParseFloat(b, 64)
	switch {
	case ea == nil && eb == nil:
		if fa < fb {
			return -1
		}
		if fa > fb {
			return 1
		}
		return 0
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
