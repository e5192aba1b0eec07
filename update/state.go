package update

import (
	"errors"
	"fmt"
)

// State is everything a trainer holds between steps that a checkpoint
// must keep: the trainable parameters' values, their optimizer slots and
// the selection's state. Trainers return copies and copy what they are
// given.
type State struct {
	Params    map[string][]float32 // by parameter name
	Optimizer map[string][]Slot    // by parameter name, in Optimizer.Slots order
	Selection *SelectionState      // nil without a selection
}

// SelectionState is what a selection carries from step to step.
type SelectionState struct {
	// Q and Ready, per unit: the threshold Algorithm 2 starts from and
	// whether it may (a unit that has not selected yet, or whose last
	// threshold was not Usable, selects exactly).
	Q     []float32
	Ready []bool
	// PaperQ and PaperReady are the printed Algorithm 2's own threshold
	// per unit (Selection.PaperAlg2; nil otherwise).
	PaperQ     []float32
	PaperReady []bool
	// Kept holds per parameter the positions of the subset, ascending:
	// the entries that keep their values (every other entry equals its
	// seed).
	Kept map[string][]int32
	// Fixed is set once the subset no longer changes (Selection.Fixed).
	Fixed bool
}

// NewSelectionState is the state before the first step: no threshold,
// empty subsets, not fixed.
func NewSelectionState(s *Selection) *SelectionState {
	st := &SelectionState{Q: make([]float32, len(s.Units)), Ready: make([]bool, len(s.Units)), Kept: map[string][]int32{}}
	if s.PaperAlg2 {
		st.PaperQ, st.PaperReady = make([]float32, len(s.Units)), make([]bool, len(s.Units))
	}
	for _, u := range s.Units {
		for _, p := range u.Pieces {
			st.Kept[p.Param] = nil
		}
	}
	return st
}

// Clone deep-copies the state.
func (st *SelectionState) Clone() *SelectionState {
	c := &SelectionState{Q: clone(st.Q), Ready: clone(st.Ready), PaperQ: clone(st.PaperQ), PaperReady: clone(st.PaperReady),
		Kept: make(map[string][]int32, len(st.Kept)), Fixed: st.Fixed}
	for name, k := range st.Kept {
		c.Kept[name] = clone(k)
	}
	return c
}

func clone[T any](s []T) []T {
	if s == nil {
		return nil
	}
	return append(make([]T, 0, len(s)), s...)
}

// CheckState reports what makes st unusable as the state of selection s
// over parameters of the given sizes (entries by name): a vector per unit,
// thresholds Algorithm 2 can start from where Ready, the printed
// algorithm's thresholds exactly when PaperAlg2, ascending positions
// inside each parameter, at most K kept per unit, and a fixed subset where
// the selection fixes one from the start.
func (s *Selection) CheckState(st *SelectionState, sizes map[string]int) error {
	n := len(s.Units)
	if len(st.Q) != n || len(st.Ready) != n {
		return fmt.Errorf("%d thresholds and %d ready flags, want one per unit (%d)", len(st.Q), len(st.Ready), n)
	}
	if (st.PaperQ != nil) != s.PaperAlg2 || len(st.PaperQ) != len(st.PaperReady) || (s.PaperAlg2 && len(st.PaperQ) != n) {
		return fmt.Errorf("the printed Algorithm 2's thresholds: %d, want %d", len(st.PaperQ), map[bool]int{true: n}[s.PaperAlg2])
	}
	for i, u := range s.Units {
		if st.Ready[i] && !Usable(st.Q[i]) {
			return fmt.Errorf("unit %q: threshold %v, want a finite number ≥ 0", u.Name, st.Q[i])
		}
		if s.PaperAlg2 && st.PaperReady[i] && !Usable(st.PaperQ[i]) {
			return fmt.Errorf("unit %q: the printed Algorithm 2's threshold %v, want a finite number ≥ 0", u.Name, st.PaperQ[i])
		}
		var kept int64
		for _, p := range u.Pieces {
			idx, ok := st.Kept[p.Param]
			if !ok {
				return fmt.Errorf("no subset for parameter %q", p.Param)
			}
			prev := int32(-1)
			for k, pos := range idx {
				if pos <= prev || int(pos) >= sizes[p.Param] {
					return fmt.Errorf("parameter %q: position %d is %d after %d in a tensor of %d entries (want ascending positions inside it)",
						p.Param, k, pos, prev, sizes[p.Param])
				}
				prev = pos
			}
			kept += int64(len(idx))
		}
		if kept > u.K {
			return fmt.Errorf("unit %q keeps %d entries, more than its k = %d", u.Name, kept, u.K)
		}
	}
	if len(st.Kept) != len(sizes) {
		return fmt.Errorf("subsets for %d parameters, the selection has %d", len(st.Kept), len(sizes))
	}
	if s.Fixed == FixFromStart && !st.Fixed {
		return errors.New("the subset is fixed from the start (a random mask), the state says it is not")
	}
	return nil
}

// CheckState reports what makes st unusable as the state of a trainer of
// p over parameters of the given shapes: every parameter's values and
// every optimizer slot of the right name and length, and the selection's
// state (Selection.CheckState). Params, Optimizer or Selection left nil
// are not checked (a trainer keeps what it has).
func (p *Program) CheckState(shapes map[string][]int, st *State) error {
	sizes := make(map[string]int, len(shapes))
	for name, shape := range shapes {
		sizes[name] = NumElements(shape)
	}
	if st.Params != nil {
		if len(st.Params) != len(shapes) {
			return fmt.Errorf("the state holds %d trainable parameters, the run trains %d", len(st.Params), len(shapes))
		}
		for name, n := range sizes {
			v, ok := st.Params[name]
			if !ok {
				return fmt.Errorf("the state has no values for parameter %q", name)
			}
			if len(v) != n {
				return fmt.Errorf("the state's parameter %q has %d values, the model's %d", name, len(v), n)
			}
		}
	}
	if st.Optimizer != nil {
		for name, shape := range shapes {
			saved, ok := st.Optimizer[name]
			if !ok {
				return fmt.Errorf("the state has no optimizer slots for parameter %q", name)
			}
			want := p.Optimizer.Slots(shape)
			if len(saved) != len(want) {
				return fmt.Errorf("parameter %q: the state has %d optimizer slots, the optimizer keeps %d", name, len(saved), len(want))
			}
			for i, w := range want {
				if s := saved[i]; s.Name != w.Name || len(s.Data) != NumElements(w.Shape) {
					return fmt.Errorf("parameter %q: slot %q has %d values, the optimizer wants %q with %d", name, s.Name, len(s.Data), w.Name, NumElements(w.Shape))
				}
			}
		}
	}
	if st.Selection != nil {
		if p.Selection == nil {
			return errors.New("a selection state for an update without a selection")
		}
		if err := p.Selection.CheckState(st.Selection, sizes); err != nil {
			return err
		}
	}
	return nil
}
