package sweep

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/train"
)

// moduleKinds maps every parameter of the model to its module kind
// (dst.Modules, as DST's silos see them; ".weight" dropped) and lists
// the kinds in the order the model's parameters first have them.
func moduleKinds(modelPath string) (map[string]string, []string, error) {
	m, err := onnx.ReadFile(modelPath)
	if err != nil {
		return nil, nil, err
	}
	defer m.Close()
	model, err := ir.NewModel(m)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", modelPath, err)
	}
	src, err := train.NewModelSource(model.Float32Compute(), train.ModelSourceOptions{Task: train.TaskLM})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", modelPath, err)
	}
	g, err := src.ForwardGraph()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", modelPath, err)
	}
	modules := dst.Modules(g)
	kinds := map[string]string{}
	var order []string
	for _, p := range g.Params {
		k := strings.TrimSuffix(modules[p.Name].Kind, ".weight")
		if k == "" {
			k = "other"
		}
		kinds[p.Name] = k
		if !slices.Contains(order, k) {
			order = append(order, k)
		}
	}
	return kinds, order, nil
}

// modulesPlot draws, for every point (at its best learning rate), the
// share of its DST subset (the final delta's entries) in each module
// kind: mean ± sd over seeds, a bar per point in every kind's category.
func modulesPlot(s *Spec, dir string, p Plot, sel []*Result) (*plot.Plot, error) {
	q := s.Quality
	kinds, order, err := moduleKinds(s.Model)
	if err != nil {
		return nil, err
	}
	pts := points(settings(sel, q), q)
	_, groups, cell, err := pointGrid(pts, nil, p.Group)
	if err != nil {
		return nil, err
	}
	shares := map[string]map[string][]float64{} // group → kind → per run
	used := map[string]bool{}
	for key, pt := range cell {
		if pt.Best == nil {
			continue
		}
		g := key[1]
		shares[g] = map[string][]float64{}
		for _, r := range pt.Best.Results {
			if r.Status != StatusDone {
				continue
			}
			d, err := dst.ReadDelta(filepath.Join(dir, r.Dir, dst.DeltaFile))
			if err != nil {
				return nil, fmt.Errorf("%w (a modules plot reads DST runs' deltas)", err)
			}
			per := map[string]float64{}
			var total float64
			for _, t := range d.Tensors {
				n := float64(len(t.Indices))
				per[kinds[t.Name]] += n
				total += n
			}
			for _, k := range order {
				shares[g][k] = append(shares[g][k], 100*per[k]/total)
				if per[k] > 0 {
					used[k] = true
				}
			}
		}
	}
	var cats []string
	for _, k := range order {
		if used[k] {
			cats = append(cats, k)
		}
	}
	vals, sds := make([][]float64, len(cats)), make([][]float64, len(cats))
	for i, k := range cats {
		vals[i], sds[i] = make([]float64, len(groups)), make([]float64, len(groups))
		for j, g := range groups {
			st := statOf(shares[g][k])
			vals[i][j], sds[i][j] = st.Mean, st.SD
			if st.N == 1 {
				sds[i][j] = 0
			}
		}
	}
	title := p.Title
	if title == "" {
		title = "where the subset lies: share of the free parameters per module kind"
	}
	pl := newPlot(title)
	pl.Y.Label.Text = "share of the free parameters (%)"
	pl.X.Label.Text = "module kind (error bars: sd over seeds)"
	if err := groupedBars(pl, cats, groups, vals, sds, 0); err != nil {
		return nil, err
	}
	pl.Y.Min = 0
	pl.Y.Max = math.Max(pl.Y.Max, 1) * 1.3
	return pl, nil
}

// modelParameters counts the elements of the model's floating-point
// initializers: its parameters, as dstune inspect counts them.
func modelParameters(modelPath string) (int64, error) {
	m, err := onnx.ReadFile(modelPath)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	var n int64
	for _, it := range m.Graph.Initializers {
		switch it.DataType {
		case onnx.Float, onnx.Float16, onnx.BFloat16, onnx.Double:
			size := int64(1)
			for _, d := range it.Dims {
				size *= d
			}
			n += size
		}
	}
	return n, nil
}

// trainedParameters counts the parameters full fine-tuning trains with
// cfg: those its --trainable names (without one, every float parameter
// the output depends on), as dstune train picks them.
func trainedParameters(cfg train.Config) (int64, error) {
	m, err := onnx.ReadFile(cfg.Model)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	model, err := ir.NewModel(m)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", cfg.Model, err)
	}
	src, err := train.NewModelSource(model, train.ModelSourceOptions{Task: cfg.Task, Trainable: cfg.Trainable})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", cfg.Model, err)
	}
	var n int64
	for _, p := range src.Params() {
		n += int64(p.Tensor.Len())
	}
	return n, nil
}
