package train

import (
	"context"
	"fmt"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
)

// ProfileNodes times every node of the training graph of b's shape on the
// backend (one warm-up run, then the median of runs), with the batch's
// inputs, as a step runs it but without the update: parameters and state
// stay as they are. It returns the graph and the node times in the order
// the backend ran them; a backend that cannot time single nodes says so.
// Once ctx is done it stops with ctx's error.
func (e *Engine) ProfileNodes(ctx context.Context, b *Batch, runs int) (*ir.Graph, []accel.NodeTime, error) {
	p, ok := e.trainer.(accel.NodeProfiler)
	if !ok {
		return nil, nil, fmt.Errorf("train: the backend (%T) cannot time the nodes of a step", e.trainer)
	}
	g, err := e.TrainingGraph(BatchShape{b.B, b.T})
	if err != nil {
		return nil, nil, err
	}
	feed, err := e.Feed(b)
	if err != nil {
		return nil, nil, err
	}
	times, err := p.ProfileNodes(ctx, g, feed, runs)
	if err != nil {
		return nil, nil, err
	}
	return g, times, nil
}
