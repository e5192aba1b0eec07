package cpu

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
)

var _ accel.NodeProfiler = (*trainer)(nil)

// ProfileNodes times every step of the executable: one warm-up run, then
// runs timed runs; each node's median time, in execution order. It stops
// with ctx's error between two nodes once ctx is done.
func (e *Executable) ProfileNodes(ctx context.Context, inputs []*ir.Tensor, runs int) ([]accel.NodeTime, error) {
	if runs < 1 {
		runs = 1
	}
	if _, err := e.Run(inputs); err != nil { // warm up caches and pages
		return nil, err
	}
	times := make([][]time.Duration, len(e.steps))
	defer e.returnBorrowed()
	for range runs {
		if err := e.bindInputs(inputs); err != nil {
			return nil, err
		}
		for i := range e.steps {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			s := &e.steps[i]
			start := time.Now()
			if err := s.k.run(); err != nil {
				return nil, fmt.Errorf("cpu: %s: %w", s.node, err)
			}
			times[i] = append(times[i], time.Since(start))
		}
	}
	out := make([]accel.NodeTime, len(e.steps))
	for i := range e.steps {
		s := &e.steps[i]
		_, reference := s.k.(*evalKernel)
		ts := times[i]
		slices.Sort(ts)
		out[i] = accel.NodeTime{Node: s.node, Time: ts[len(ts)/2], Reference: reference, Folded: s.folded}
	}
	return out, nil
}

// ProfileNodes times the nodes of the training graph tg with the
// executable Step runs it with (compiled on first use); the parameters
// and the optimizer state are left as they are.
func (t *trainer) ProfileNodes(ctx context.Context, tg *ir.Graph, inputs []*ir.Tensor, runs int) ([]accel.NodeTime, error) {
	s, err := t.stepOf(tg)
	if err != nil {
		return nil, err
	}
	exe, ok := s.exe.(*Executable)
	if !ok {
		return nil, fmt.Errorf("cpu: the training graph's executable is a %T", s.exe)
	}
	return exe.ProfileNodes(ctx, inputs, runs)
}
