package accel

import (
	"context"
	"time"

	"github.com/dstune/dstune/ir"
)

// NodeTime is the time one node of a graph took in a profiled run.
type NodeTime struct {
	Node *ir.Node
	Time time.Duration
	// Reference is set when the backend ran the node through the op's
	// reference implementation (ir.Op.Eval) rather than a kernel of its
	// own.
	Reference bool
	// Folded are the nodes the backend ran inside this one (a bias and an
	// activation in a product's epilogue), in order; Time includes them.
	Folded []*ir.Node
}

// A NodeProfiler is a Trainer that can time every node of a training
// graph it runs (dstune profile step): it runs tg on inputs, as Step
// does but without the update, runs times after a warm-up run, and
// returns the nodes it executes in execution order, each with its median
// time. Nodes the backend folds into others (a transpose into a product's
// packing, a bias and activation into its epilogue) are not listed; their
// time is the node's they are folded into (NodeTime.Folded names those
// that do work of their own). Once ctx is done it stops, between two
// nodes, with ctx's error.
type NodeProfiler interface {
	ProfileNodes(ctx context.Context, tg *ir.Graph, inputs []*ir.Tensor, runs int) ([]NodeTime, error)
}
