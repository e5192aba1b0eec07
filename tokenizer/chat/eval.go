package chat

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// scope holds the variables of a template, a loop body or a macro call.
type scope struct {
	vars   map[string]any
	parent *scope
}

func (s *scope) lookup(name string) (any, bool) {
	for ; s != nil; s = s.parent {
		if v, ok := s.vars[name]; ok {
			return v, true
		}
	}
	return nil, false
}

// loopInfo is a for loop's "loop" variable.
type loopInfo struct {
	index0, length int
	items          []any
}

// macro is a {% macro %} definition, callable.
type macro struct {
	node    *macroNode
	closure *scope
}

// renderer renders one template with one set of variables.
type renderer struct {
	t      *Template
	out    *strings.Builder
	steps  int
	depth  int
	global *scope
	// allocated counts the bytes of text and lists built so far,
	// against Limits.MaxAllocBytes.
	allocated int
}

// errLoopControl carries {% break %} and {% continue %} to their loop.
type errLoopControl struct{ isBreak bool }

func (errLoopControl) Error() string { return "break or continue outside a loop" }

func (r *renderer) errorf(line int, format string, args ...any) error {
	return &Error{Template: r.t.name, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// step counts one unit of work against the template's step limit.
func (r *renderer) step(line int) error {
	r.steps++
	if r.steps > r.t.limits.MaxSteps {
		return r.errorf(line, "rendering takes more than %d steps (the renderer's limit)", r.t.limits.MaxSteps)
	}
	return nil
}

// scan charges reading a string of n bytes (a search, a method or a
// filter of it): a step per scanBytes, so that a loop searching a long
// string costs what a loop over as many items would, not one step a turn.
func (r *renderer) scan(line, n int) error {
	r.steps += n / scanBytes
	return r.step(line)
}

// scanBytes is how many bytes of a string read count as one step: with
// the default step limit a render reads at most about 640 MB of text (a
// fraction of a second), and a real template's searches of its messages
// cost a few steps each.
const scanBytes = 64

// checkSize refuses a value larger than the output limit, so that
// repeated concatenation cannot exhaust memory.
func (r *renderer) checkSize(line, n int) error { return r.checkSize64(line, int64(n)) }

func (r *renderer) checkSize64(line int, n int64) error {
	if n > int64(r.t.limits.MaxOutputBytes) {
		return r.errorf(line, "a value of more than %d bytes (the renderer's output limit)", r.t.limits.MaxOutputBytes)
	}
	return nil
}

// checkJoined refuses joining parts with sep when the result would be
// larger than the output limit, before building it.
func (r *renderer) checkJoined(line int, parts []string, sep string) error {
	size := int64(len(sep)) * int64(max(len(parts)-1, 0))
	for _, p := range parts {
		size += int64(len(p))
	}
	return r.checkSize64(line, size)
}

// alloc charges n bytes built (a string's bytes, a list's slotBytes per
// item) against the render's allocation limit, before building them: the
// total bounds both the memory and the copying a render may do.
func (r *renderer) alloc(line, n int) error {
	if n < 0 || n > r.t.limits.MaxAllocBytes-r.allocated {
		return r.errorf(line, "rendering builds more than %d bytes of text and lists (the renderer's limit)", r.t.limits.MaxAllocBytes)
	}
	r.allocated += n
	return nil
}

// allocItems charges a list of n items.
func (r *renderer) allocItems(line int, n int64) error {
	if n > int64(r.t.limits.MaxAllocBytes/slotBytes) {
		return r.alloc(line, -1)
	}
	return r.alloc(line, int(n)*slotBytes)
}

// slotBytes is what one item of a list costs.
const slotBytes = 16

// str is str(v), charged against the allocation limit and refused past
// the output limit.
func (r *renderer) str(line int, v any) (string, error) {
	if s, ok := v.(string); ok {
		return s, nil
	}
	limit := min(r.t.limits.MaxOutputBytes, r.t.limits.MaxAllocBytes-r.allocated)
	s, err := toStr(v, limit)
	if errors.Is(err, errTooLarge) {
		if limit < r.t.limits.MaxOutputBytes {
			return "", r.alloc(line, -1)
		}
		return "", r.errorf(line, "a value of more than %d bytes (the renderer's output limit)", r.t.limits.MaxOutputBytes)
	}
	if err != nil {
		return "", r.errorf(line, "%v", err)
	}
	return s, r.alloc(line, len(s))
}

// allocResult charges what a filter or call returned: its text or its
// list (a value passed through is charged again, which errs on the safe
// side).
func (r *renderer) allocResult(line int, v any) error {
	switch v := v.(type) {
	case string:
		return r.alloc(line, len(v))
	case []any:
		return r.allocItems(line, int64(len(v)))
	}
	return nil
}

// equal is Python's a == b, each item compared counting as a step.
func (r *renderer) equal(line int, a, b any) (bool, error) {
	budget := r.t.limits.MaxSteps - r.steps
	left := budget
	eq, err := equal(a, b, &left, 0)
	r.steps += budget - left
	if errors.Is(err, errTooLarge) {
		return false, r.step(line)
	}
	if err != nil {
		return false, r.errorf(line, "%v", err)
	}
	return eq, nil
}

func (r *renderer) write(line int, s string) error {
	if r.out.Len()+len(s) > r.t.limits.MaxOutputBytes {
		return r.errorf(line, "output longer than %d bytes (the renderer's limit)", r.t.limits.MaxOutputBytes)
	}
	if err := r.alloc(line, len(s)); err != nil {
		return err
	}
	r.out.WriteString(s)
	return nil
}

func (r *renderer) enter(line int) error {
	r.depth++
	if r.depth > maxNesting {
		return r.errorf(line, "calls nested more than %d deep", maxNesting)
	}
	return nil
}

func (r *renderer) leave() { r.depth-- }

func (r *renderer) execBody(body []node, s *scope) error {
	for _, n := range body {
		if err := r.exec(n, s); err != nil {
			return err
		}
	}
	return nil
}

func (r *renderer) exec(n node, s *scope) error {
	if err := r.step(n.nodeLine()); err != nil {
		return err
	}
	switch n := n.(type) {
	case *textNode:
		return r.write(0, n.text)
	case *outputNode:
		v, err := r.eval(n.expr, s)
		if err != nil {
			return err
		}
		text, err := r.str(n.line, v)
		if err != nil {
			return err
		}
		return r.write(n.line, text)
	case *ifNode:
		for i, c := range n.conds {
			v, err := r.eval(c, s)
			if err != nil {
				return err
			}
			if truthy(v) {
				return r.execBody(n.bodies[i], s)
			}
		}
		return r.execBody(n.orElse, s)
	case *forNode:
		return r.execFor(n, s)
	case *setNode:
		return r.execSet(n, s)
	case *macroNode:
		s.vars[n.name] = &macro{node: n, closure: s}
		return nil
	case *loopControlNode:
		return errLoopControl{isBreak: n.isBreak}
	case *generationNode:
		return r.execBody(n.body, s)
	case *filterBlockNode:
		text, err := r.capture(n.body, s, n.line)
		if err != nil {
			return err
		}
		v, err := r.applyFilter(n.filter, text, s)
		if err != nil {
			return err
		}
		if text, err = r.str(n.line, v); err != nil {
			return err
		}
		return r.write(n.line, text)
	}
	return r.errorf(n.nodeLine(), "unknown statement %T", n)
}

// capture renders body into a string of its own.
func (r *renderer) capture(body []node, s *scope, line int) (string, error) {
	saved := r.out
	var b strings.Builder
	r.out = &b
	err := r.execBody(body, s)
	r.out = saved
	if err != nil {
		return "", err
	}
	return b.String(), r.checkSize(line, saved.Len()+b.Len())
}

func (r *renderer) execFor(n *forNode, s *scope) error {
	iter, err := r.eval(n.iter, s)
	if err != nil {
		return err
	}
	items, err := r.iterate(n.line, iter)
	if err != nil {
		return err
	}
	body := &scope{vars: map[string]any{}, parent: s}
	if n.filter != nil {
		var kept []any
		for _, item := range items {
			if err := r.bind(n.line, body, n.targets, item); err != nil {
				return err
			}
			ok, err := r.eval(n.filter, body)
			if err != nil {
				return err
			}
			if truthy(ok) {
				kept = append(kept, item)
			}
		}
		items = kept
	}
	if len(items) == 0 {
		return r.execBody(n.orElse, s)
	}
	loop := &loopInfo{length: len(items), items: items}
	body.vars["loop"] = loop
	for i, item := range items {
		if err := r.step(n.line); err != nil {
			return err
		}
		loop.index0 = i
		if err := r.bind(n.line, body, n.targets, item); err != nil {
			return err
		}
		err := r.execBody(n.body, body)
		var lc errLoopControl
		if errors.As(err, &lc) {
			if lc.isBreak {
				break
			}
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// bind assigns item to the loop's or set's target names, unpacking a
// sequence over several.
func (r *renderer) bind(line int, s *scope, targets []string, item any) error {
	if len(targets) == 1 {
		s.vars[targets[0]] = item
		return nil
	}
	parts, err := r.iterate(line, item)
	if err != nil {
		return err
	}
	if len(parts) != len(targets) {
		return r.errorf(line, "cannot unpack %d values into %d names", len(parts), len(targets))
	}
	for i, t := range targets {
		s.vars[t] = parts[i]
	}
	return nil
}

// iterate lists what a for loop visits: a list's items, a dict's keys,
// a string's characters.
func (r *renderer) iterate(line int, v any) ([]any, error) {
	switch v := v.(type) {
	case []any:
		return v, nil
	case *Dict:
		if err := r.allocItems(line, int64(len(v.keys))); err != nil {
			return nil, err
		}
		keys := make([]any, len(v.keys))
		for i, k := range v.keys {
			keys[i] = k
		}
		return keys, nil
	case string:
		n := utf8.RuneCountInString(v)
		// Each character is a string of its own: a slot and its text.
		if err := r.allocItems(line, 2*int64(n)); err != nil {
			return nil, err
		}
		chars := make([]any, 0, n)
		for _, c := range v {
			chars = append(chars, string(c))
		}
		return chars, nil
	case Undefined:
		// Jinja's default Undefined iterates as empty.
		return nil, nil
	}
	return nil, r.errorf(line, "'%s' object is not iterable", typeName(v))
}

func (r *renderer) execSet(n *setNode, s *scope) error {
	var v any
	var err error
	if n.value == nil {
		v, err = r.capture(n.body, s, n.line)
	} else {
		v, err = r.eval(n.value, s)
	}
	if err != nil {
		return err
	}
	if n.ns != "" {
		obj, _ := s.lookup(n.ns)
		ns, ok := obj.(*namespace)
		if !ok {
			return r.errorf(n.line, "cannot set %s.%s: %s is not a namespace() (%s)", n.ns, n.attr, n.ns, typeName(obj))
		}
		ns.attrs.Set(n.attr, v)
		return nil
	}
	return r.bind(n.line, s, n.targets, v)
}

func (r *renderer) eval(e expr, s *scope) (any, error) {
	if err := r.step(e.exprLine()); err != nil {
		return nil, err
	}
	switch e := e.(type) {
	case *literalExpr:
		return e.value, nil
	case *nameExpr:
		if v, ok := s.lookup(e.name); ok {
			return v, nil
		}
		if f, ok := globals[e.name]; ok {
			return f, nil
		}
		return Undefined{Name: e.name}, nil
	case *listExpr:
		if err := r.allocItems(e.line, int64(len(e.items))); err != nil {
			return nil, err
		}
		list := make([]any, 0, len(e.items))
		for _, item := range e.items {
			v, err := r.eval(item, s)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		return list, nil
	case *dictExpr:
		d := NewDict()
		for i := range e.keys {
			k, err := r.eval(e.keys[i], s)
			if err != nil {
				return nil, err
			}
			ks, ok := k.(string)
			if !ok {
				return nil, r.errorf(e.line, "dict keys must be strings here, not %s", typeName(k))
			}
			v, err := r.eval(e.vals[i], s)
			if err != nil {
				return nil, err
			}
			d.Set(ks, v)
		}
		return d, nil
	case *attrExpr:
		obj, err := r.eval(e.obj, s)
		if err != nil {
			return nil, err
		}
		return r.getAttr(e.line, obj, e.name)
	case *itemExpr:
		obj, err := r.eval(e.obj, s)
		if err != nil {
			return nil, err
		}
		idx, err := r.eval(e.index, s)
		if err != nil {
			return nil, err
		}
		return r.getItem(e.line, obj, idx)
	case *sliceExpr:
		return r.evalSlice(e, s)
	case *callExpr:
		return r.evalCall(e, s)
	case *filterExpr:
		v, err := r.eval(e.value, s)
		if err != nil {
			return nil, err
		}
		v, err = r.applyFilter(e, v, s)
		if err != nil {
			return nil, err
		}
		return v, r.allocResult(e.line, v)
	case *testExpr:
		v, err := r.eval(e.value, s)
		if err != nil {
			return nil, err
		}
		args, err := r.evalList(e.args, s)
		if err != nil {
			return nil, err
		}
		ok, err := r.applyTest(e.line, e.name, v, args)
		if err != nil {
			return nil, err
		}
		return ok != e.negated, nil
	case *unaryExpr:
		x, err := r.eval(e.x, s)
		if err != nil {
			return nil, err
		}
		switch e.op {
		case "not":
			return !truthy(x), nil
		case "-":
			switch x := x.(type) {
			case int64:
				if x == math.MinInt64 {
					return nil, r.errorf(e.line, "integer overflow")
				}
				return -x, nil
			case float64:
				return -x, nil
			case bool:
				return -boolInt(x), nil
			}
		case "+":
			switch x := x.(type) {
			case int64, float64:
				return x, nil
			case bool:
				return boolInt(x), nil
			}
		}
		return nil, r.errorf(e.line, "bad operand type for unary %s: %s", e.op, r.describeValue(x))
	case *binaryExpr:
		return r.evalBinary(e, s)
	case *compareExpr:
		a, err := r.eval(e.first, s)
		if err != nil {
			return nil, err
		}
		for i, op := range e.ops {
			b, err := r.eval(e.operands[i], s)
			if err != nil {
				return nil, err
			}
			ok, err := r.compare(e.line, op, a, b)
			if err != nil || !ok {
				return false, err
			}
			a = b
		}
		return true, nil
	case *condExpr:
		c, err := r.eval(e.cond, s)
		if err != nil {
			return nil, err
		}
		if truthy(c) {
			return r.eval(e.then, s)
		}
		if e.else_ == nil {
			return Undefined{}, nil
		}
		return r.eval(e.else_, s)
	}
	return nil, r.errorf(e.exprLine(), "unknown expression %T", e)
}

func (r *renderer) evalList(es []expr, s *scope) ([]any, error) {
	var out []any
	for _, e := range es {
		v, err := r.eval(e, s)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// describeValue names a value for an error: its type, or an undefined
// value's name.
func (r *renderer) describeValue(v any) string {
	if u, ok := v.(Undefined); ok {
		return r.undefinedName(u)
	}
	return typeName(v)
}

func (r *renderer) undefinedName(u Undefined) string {
	if u.Name == "" {
		return "an undefined value"
	}
	return fmt.Sprintf("'%s' (undefined)", u.Name)
}

func (r *renderer) evalBinary(e *binaryExpr, s *scope) (any, error) {
	a, err := r.eval(e.a, s)
	if err != nil {
		return nil, err
	}
	switch e.op {
	case "and":
		if !truthy(a) {
			return a, nil
		}
		return r.eval(e.b, s)
	case "or":
		if truthy(a) {
			return a, nil
		}
		return r.eval(e.b, s)
	}
	b, err := r.eval(e.b, s)
	if err != nil {
		return nil, err
	}
	if e.op == "~" {
		as, err := r.str(e.line, a)
		if err != nil {
			return nil, err
		}
		bs, err := r.str(e.line, b)
		if err != nil {
			return nil, err
		}
		if err := r.checkSize(e.line, len(as)+len(bs)); err != nil {
			return nil, err
		}
		if err := r.alloc(e.line, len(as)+len(bs)); err != nil {
			return nil, err
		}
		return as + bs, nil
	}
	return r.arith(e.line, e.op, a, b)
}

// arith applies + - * / // % ** as Python does.
func (r *renderer) arith(line int, op string, a, b any) (any, error) {
	if ab, ok := a.(bool); ok {
		a = boolInt(ab)
	}
	if bb, ok := b.(bool); ok {
		b = boolInt(bb)
	}
	switch av := a.(type) {
	case string:
		switch bv := b.(type) {
		case string:
			if op == "+" {
				if err := r.checkSize(line, len(av)+len(bv)); err != nil {
					return nil, err
				}
				if err := r.alloc(line, len(av)+len(bv)); err != nil {
					return nil, err
				}
				return av + bv, nil
			}
		case int64:
			if op == "*" {
				if bv <= 0 {
					return "", nil
				}
				if err := r.checkSize(line, int(min(bv, math.MaxInt32))*len(av)); err != nil {
					return nil, err
				}
				if err := r.alloc(line, int(bv)*len(av)); err != nil {
					return nil, err
				}
				return strings.Repeat(av, int(bv)), nil
			}
		}
	case []any:
		switch bv := b.(type) {
		case []any:
			if op == "+" {
				if err := r.allocItems(line, int64(len(av)+len(bv))); err != nil {
					return nil, err
				}
				return append(append(make([]any, 0, len(av)+len(bv)), av...), bv...), nil
			}
		case int64:
			if op == "*" {
				if bv <= 0 {
					return []any{}, nil
				}
				if err := r.allocItems(line, min(bv, math.MaxInt32)*int64(max(len(av), 1))); err != nil {
					return nil, err
				}
				out := make([]any, 0, int(bv)*len(av))
				for range bv {
					out = append(out, av...)
				}
				return out, nil
			}
		}
	case int64:
		switch bv := b.(type) {
		case int64:
			return r.intArith(line, op, av, bv)
		case float64:
			return r.floatArith(line, op, float64(av), bv)
		case string, []any:
			if op == "*" {
				return r.arith(line, op, b, a)
			}
		}
	case float64:
		switch bv := b.(type) {
		case int64:
			return r.floatArith(line, op, av, float64(bv))
		case float64:
			return r.floatArith(line, op, av, bv)
		}
	}
	return nil, r.errorf(line, "unsupported operand types for %s: %s and %s", op, r.describeValue(a), r.describeValue(b))
}

func (r *renderer) intArith(line int, op string, a, b int64) (any, error) {
	overflow := func() (any, error) { return nil, r.errorf(line, "integer overflow in %d %s %d", a, op, b) }
	switch op {
	case "+":
		c := a + b
		if (c > a) != (b > 0) {
			return overflow()
		}
		return c, nil
	case "-":
		c := a - b
		if (c < a) != (b > 0) {
			return overflow()
		}
		return c, nil
	case "*":
		if a != 0 && b != 0 {
			c := a * b
			if c/b != a || (a == -1 && b == math.MinInt64) || (b == -1 && a == math.MinInt64) {
				return overflow()
			}
			return c, nil
		}
		return int64(0), nil
	case "/":
		if b == 0 {
			return nil, r.errorf(line, "division by zero")
		}
		return float64(a) / float64(b), nil
	case "//", "%":
		if b == 0 {
			return nil, r.errorf(line, "integer division or modulo by zero")
		}
		if a == math.MinInt64 && b == -1 {
			return overflow()
		}
		q, m := a/b, a%b
		if m != 0 && (m < 0) != (b < 0) {
			q--
			m += b
		}
		if op == "//" {
			return q, nil
		}
		return m, nil
	case "**":
		if b < 0 {
			return math.Pow(float64(a), float64(b)), nil
		}
		result := int64(1)
		for range b {
			next := result * a
			if a != 0 && next/a != result {
				return overflow()
			}
			result = next
			if result == 0 || result == 1 && a == 1 {
				break
			}
			if err := r.step(line); err != nil {
				return nil, err
			}
		}
		return result, nil
	}
	return nil, r.errorf(line, "unknown operator %s", op)
}

func (r *renderer) floatArith(line int, op string, a, b float64) (any, error) {
	switch op {
	case "+":
		return a + b, nil
	case "-":
		return a - b, nil
	case "*":
		return a * b, nil
	case "/":
		if b == 0 {
			return nil, r.errorf(line, "float division by zero")
		}
		return a / b, nil
	case "//", "%":
		if b == 0 {
			return nil, r.errorf(line, "float modulo by zero")
		}
		m := math.Mod(a, b)
		if m != 0 && (m < 0) != (b < 0) {
			m += b
		}
		if op == "%" {
			return m, nil
		}
		return math.Floor((a - m) / b), nil
	case "**":
		return math.Pow(a, b), nil
	}
	return nil, r.errorf(line, "unknown operator %s", op)
}

// compare applies a comparison operator.
func (r *renderer) compare(line int, op string, a, b any) (bool, error) {
	switch op {
	case "==":
		return r.equal(line, a, b)
	case "!=":
		eq, err := r.equal(line, a, b)
		return !eq, err
	case "in", "not in":
		in, err := r.contains(line, b, a)
		return in == (op == "in"), err
	}
	c, err := r.order(line, op, a, b)
	if err != nil {
		return false, err
	}
	switch op {
	case "<":
		return c < 0, nil
	case "<=":
		return c <= 0, nil
	case ">":
		return c > 0, nil
	}
	return c >= 0, nil
}

// order compares two numbers, strings or lists.
func (r *renderer) order(line int, op string, a, b any) (int, error) {
	num := func(v any) (float64, bool) {
		switch v := v.(type) {
		case int64:
			return float64(v), true
		case float64:
			return v, true
		case bool:
			return float64(boolInt(v)), true
		}
		return 0, false
	}
	if x, ok := num(a); ok {
		if y, ok := num(b); ok {
			if ai, ok := a.(int64); ok {
				if bi, ok := b.(int64); ok {
					return cmp.Compare(ai, bi), nil
				}
			}
			switch {
			case x < y:
				return -1, nil
			case x > y:
				return 1, nil
			}
			return 0, nil
		}
	}
	if x, ok := a.(string); ok {
		if y, ok := b.(string); ok {
			return strings.Compare(x, y), r.scan(line, min(len(x), len(y)))
		}
	}
	if x, ok := a.([]any); ok {
		if y, ok := b.([]any); ok {
			for i := 0; i < len(x) && i < len(y); i++ {
				eq, err := r.equal(line, x[i], y[i])
				if err != nil {
					return 0, err
				}
				if eq {
					continue
				}
				if err := r.enter(line); err != nil {
					return 0, err
				}
				c, err := r.order(line, op, x[i], y[i])
				r.leave()
				return c, err
			}
			return cmp.Compare(int64(len(x)), int64(len(y))), nil
		}
	}
	return 0, r.errorf(line, "'%s' not supported between %s and %s", op, r.describeValue(a), r.describeValue(b))
}

// contains is Python's "needle in container".
func (r *renderer) contains(line int, container, needle any) (bool, error) {
	switch c := container.(type) {
	case string:
		n, ok := needle.(string)
		if !ok {
			return false, r.errorf(line, "'in <string>' requires a string as left operand, not %s", r.describeValue(needle))
		}
		if err := r.scan(line, len(c)); err != nil {
			return false, err
		}
		return strings.Contains(c, n), nil
	case []any:
		for _, x := range c {
			if eq, err := r.equal(line, x, needle); eq || err != nil {
				return eq, err
			}
		}
		return false, nil
	case *Dict:
		k, ok := needle.(string)
		if !ok {
			return false, nil
		}
		_, in := c.vals[k]
		return in, nil
	case Undefined:
		return false, nil
	}
	return false, r.errorf(line, "argument of type '%s' is not iterable", typeName(container))
}

// getAttr is Jinja's obj.name: a method or attribute first, then an item.
func (r *renderer) getAttr(line int, obj any, name string) (any, error) {
	switch o := obj.(type) {
	case Undefined:
		return nil, r.errorf(line, "%s has no attribute '%s'", r.undefinedName(o), name)
	case *Dict:
		if m := dictMethod(o, name); m != nil {
			return m, nil
		}
		if v, ok := o.vals[name]; ok {
			return v, nil
		}
	case *namespace:
		if v, ok := o.attrs.vals[name]; ok {
			return v, nil
		}
	case *loopInfo:
		return r.loopAttr(line, o, name)
	case string:
		if m := stringMethod(o, name); m != nil {
			// Charged for the string the method will read.
			return m, r.scan(line, len(o))
		}
	}
	return Undefined{Name: fmt.Sprintf("%s.%s", typeName(obj), name)}, nil
}

// getItem is Jinja's obj[key]: an item first, then an attribute.
func (r *renderer) getItem(line int, obj, key any) (any, error) {
	switch o := obj.(type) {
	case Undefined:
		return nil, r.errorf(line, "%s has no item %s", r.undefinedName(o), shortStr(key))
	case *Dict:
		if k, ok := key.(string); ok {
			if v, ok := o.vals[k]; ok {
				return v, nil
			}
			if m := dictMethod(o, k); m != nil {
				return m, nil
			}
		}
		return Undefined{Name: "dict[" + reprString(key) + "]"}, nil
	case []any:
		if i, ok := asIndex(key); ok {
			if i < 0 {
				i += int64(len(o))
			}
			if i >= 0 && i < int64(len(o)) {
				return o[i], nil
			}
			return Undefined{Name: fmt.Sprintf("list[%d]", i)}, nil
		}
	case string:
		if i, ok := asIndex(key); ok {
			// Finding the character reads the string: charge it.
			if err := r.alloc(line, len(o)); err != nil {
				return nil, err
			}
			if i < 0 {
				i += int64(utf8.RuneCountInString(o))
			}
			if i >= 0 {
				for _, c := range o {
					if i == 0 {
						return string(c), nil
					}
					i--
				}
			}
			return Undefined{Name: fmt.Sprintf("str[%d]", i)}, nil
		}
	}
	if k, ok := key.(string); ok {
		return r.getAttr(line, obj, k)
	}
	return Undefined{Name: typeName(obj) + "[" + reprString(key) + "]"}, nil
}

func reprString(v any) string {
	if s, ok := v.(string); ok {
		var b strings.Builder
		writePyStringRepr(&b, s[:min(len(s), 200)])
		return b.String()
	}
	return shortStr(v)
}

func asIndex(v any) (int64, bool) {
	switch v := v.(type) {
	case int64:
		return v, true
	case bool:
		return boolInt(v), true
	}
	return 0, false
}

func (r *renderer) loopAttr(line int, l *loopInfo, name string) (any, error) {
	n := int64(l.length)
	i := int64(l.index0)
	switch name {
	case "index0":
		return i, nil
	case "index":
		return i + 1, nil
	case "revindex":
		return n - i, nil
	case "revindex0":
		return n - i - 1, nil
	case "first":
		return i == 0, nil
	case "last":
		return i == n-1, nil
	case "length":
		return n, nil
	case "depth":
		return int64(1), nil
	case "depth0":
		return int64(0), nil
	case "previtem":
		if i > 0 {
			return l.items[i-1], nil
		}
		return Undefined{Name: "loop.previtem"}, nil
	case "nextitem":
		if i < n-1 {
			return l.items[i+1], nil
		}
		return Undefined{Name: "loop.nextitem"}, nil
	case "cycle":
		return &function{name: "loop.cycle", call: func(r *renderer, line int, args []any, _ *Dict) (any, error) {
			if len(args) == 0 {
				return nil, r.errorf(line, "loop.cycle() needs at least one argument")
			}
			return args[l.index0%len(args)], nil
		}}, nil
	}
	return Undefined{Name: "loop." + name}, nil
}

func (r *renderer) evalSlice(e *sliceExpr, s *scope) (any, error) {
	obj, err := r.eval(e.obj, s)
	if err != nil {
		return nil, err
	}
	var bounds [3]*int64
	for i, part := range []expr{e.lo, e.hi, e.step} {
		if part == nil {
			continue
		}
		v, err := r.eval(part, s)
		if err != nil {
			return nil, err
		}
		if v == nil {
			continue
		}
		n, ok := asIndex(v)
		if !ok {
			return nil, r.errorf(e.line, "slice indices must be integers or None, not %s", r.describeValue(v))
		}
		bounds[i] = &n
	}
	step := int64(1)
	if bounds[2] != nil {
		step = *bounds[2]
		if step == 0 {
			return nil, r.errorf(e.line, "slice step cannot be zero")
		}
	}
	switch o := obj.(type) {
	case []any:
		start, count := sliceRange(len(o), bounds[0], bounds[1], step)
		if err := r.allocItems(e.line, int64(count)); err != nil {
			return nil, err
		}
		out := make([]any, count)
		for j := range out {
			out[j] = o[start+j*int(step)]
		}
		return out, nil
	case string:
		// The string is read as characters, four bytes each.
		if err := r.alloc(e.line, 4*len(o)); err != nil {
			return nil, err
		}
		runes := []rune(o)
		start, count := sliceRange(len(runes), bounds[0], bounds[1], step)
		var b strings.Builder
		for j := range count {
			b.WriteRune(runes[start+j*int(step)])
		}
		return b.String(), r.alloc(e.line, b.Len())
	}
	return nil, r.errorf(e.line, "%s cannot be sliced", r.describeValue(obj))
}

// sliceRange is Python's slice.indices for seq[lo:hi:step] over a
// sequence of length n: the first index and how many there are.
func sliceRange(n int, lo, hi *int64, step int64) (start, count int) {
	length := int64(n)
	clamp := func(p *int64, def, lowest, highest int64) int64 {
		if p == nil {
			return def
		}
		v := *p
		if v < 0 {
			v += length
			if v < lowest {
				v = lowest
			}
		} else if v > highest {
			v = highest
		}
		return v
	}
	if step > 0 {
		first, stop := clamp(lo, 0, 0, length), clamp(hi, length, 0, length)
		if stop <= first {
			return 0, 0
		}
		return int(first), int((stop - first + step - 1) / step)
	}
	first, stop := clamp(lo, length-1, -1, length-1), clamp(hi, -1, -1, length-1)
	if stop >= first {
		return 0, 0
	}
	return int(first), int((first - stop - step - 1) / -step)
}

func (r *renderer) evalCall(e *callExpr, s *scope) (any, error) {
	fn, err := r.eval(e.fn, s)
	if err != nil {
		return nil, err
	}
	args, err := r.evalList(e.args, s)
	if err != nil {
		return nil, err
	}
	kwargs := NewDict()
	for _, kw := range e.kwargs {
		v, err := r.eval(kw.value, s)
		if err != nil {
			return nil, err
		}
		kwargs.Set(kw.name, v)
	}
	if err := r.enter(e.line); err != nil {
		return nil, err
	}
	defer r.leave()
	switch f := fn.(type) {
	case *function:
		v, err := f.call(r, e.line, args, kwargs)
		if err != nil {
			return nil, err
		}
		return v, r.allocResult(e.line, v)
	case *macro:
		return r.callMacro(e.line, f, args, kwargs)
	case Undefined:
		return nil, r.errorf(e.line, "%s is not callable", r.undefinedName(f))
	}
	return nil, r.errorf(e.line, "'%s' object is not callable", typeName(fn))
}

func (r *renderer) callMacro(line int, m *macro, args []any, kwargs *Dict) (any, error) {
	n := m.node
	if len(args) > len(n.params) && !n.varargs {
		return nil, r.errorf(line, "macro %s takes %d arguments, %d given", n.name, len(n.params), len(args))
	}
	s := &scope{vars: map[string]any{}, parent: m.closure}
	if n.varargs {
		extra := []any{}
		if len(args) > len(n.params) {
			extra = append(extra, args[len(n.params):]...)
		}
		s.vars["varargs"] = extra
	}
	if n.kwargs {
		extra := NewDict()
		for _, k := range kwargs.keys {
			if !hasParam(n.params, k) {
				extra.Set(k, kwargs.vals[k])
			}
		}
		s.vars["kwargs"] = extra
	}
	for i, p := range n.params {
		switch v, ok := kwargs.Get(p.name); {
		case i < len(args):
			if ok {
				return nil, r.errorf(line, "macro %s got argument %s twice", n.name, p.name)
			}
			s.vars[p.name] = args[i]
		case ok:
			s.vars[p.name] = v
		case p.def != nil:
			d, err := r.eval(p.def, s)
			if err != nil {
				return nil, err
			}
			s.vars[p.name] = d
		default:
			s.vars[p.name] = Undefined{Name: p.name}
		}
	}
	for _, k := range kwargs.keys {
		if !hasParam(n.params, k) && !n.kwargs {
			return nil, r.errorf(line, "macro %s has no argument %s", n.name, k)
		}
	}
	text, err := r.capture(n.body, s, line)
	var lc errLoopControl
	if errors.As(err, &lc) {
		return nil, r.errorf(line, "break or continue outside a loop in macro %s", n.name)
	}
	return text, err
}

func hasParam(params []param, name string) bool {
	for _, p := range params {
		if p.name == name {
			return true
		}
	}
	return false
}
