package tpu

import (
	"errors"
	"fmt"
	"math"

	"github.com/dstune/dstune/ir"
)

// evalDevice runs a Trainer on the reference evaluator: programs are
// parsed once, buffers are host tensors. A donated buffer is poisoned
// (NaN, or all true) and marked dead, so a trainer that reads it again —
// a use after donation a real device would make an error or garbage —
// fails here too.
type evalDevice struct {
	executions int
	live       int // buffers allocated and not freed
}

type evalBuffer struct {
	t    *ir.Tensor
	dead bool
}

type evalProgram struct {
	p *Program
	m *hmodule
}

var _ device = (*evalDevice)(nil)

func (d *evalDevice) compile(p *Program) (dp deviceProgram, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("hloeval: %v", r)
		}
	}()
	return &evalProgram{p: p, m: parseModule(p.Text)}, nil
}

func (d *evalDevice) upload(t *ir.Tensor) (deviceBuffer, error) {
	d.live++
	return &evalBuffer{t: t.Clone()}, nil
}

func (d *evalDevice) download(b deviceBuffer, typ ir.Type) (*ir.Tensor, error) {
	eb := b.(*evalBuffer)
	if eb.dead {
		return nil, errors.New("evalDevice: download of a donated or freed buffer")
	}
	if eb.t.DType() != typ.DType || !eb.t.Shape().Equal(typ.Shape) {
		return nil, fmt.Errorf("evalDevice: buffer is %s%v, read as %v", eb.t.DType(), eb.t.Shape(), typ)
	}
	return eb.t.Clone(), nil
}

func (d *evalDevice) execute(p deviceProgram, args []deviceBuffer, donate []bool) (out []deviceBuffer, err error) {
	ep := p.(*evalProgram)
	ts := make([]*ir.Tensor, len(args))
	for i, a := range args {
		eb := a.(*evalBuffer)
		if eb.dead {
			return nil, fmt.Errorf("evalDevice: argument %d (%q) was donated or freed", i, ep.p.Args[i].Name)
		}
		ts[i] = eb.t
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("hloeval: %v", r)
		}
	}()
	res := evalModule(ep.m, ts)
	d.executions++
	for i, a := range args {
		if donate[i] {
			eb := a.(*evalBuffer)
			poison(eb.t)
			eb.dead = true
			d.live--
		}
	}
	out = make([]deviceBuffer, len(res))
	for i, t := range res {
		out[i] = &evalBuffer{t: t}
		d.live++
	}
	return out, nil
}

func (d *evalDevice) free(b deviceBuffer) {
	if eb := b.(*evalBuffer); !eb.dead {
		eb.dead = true
		d.live--
	}
}

func poison(t *ir.Tensor) {
	switch t.DType() {
	case ir.Float32:
		for i := range t.Float32s() {
			t.Float32s()[i] = float32(math.NaN())
		}
	case ir.Bool:
		for i := range t.Bools() {
			t.Bools()[i] = true
		}
	}
}
