package tokenizer

import (
	"fmt"
	"sync"
	"unicode/utf8"
)

type opcode uint8

const (
	opRune     opcode = iota // the code point r
	opSet                    // a code point in set
	opSplit                  // try x, then y
	opJmp                    // go to x
	opMatch                  // success
	opAssert                 // zero-width test assertKind(x)
	opLook                   // sub-program x must (not, when neg) match here; y >= 0: look-behind of y code points
	opAtomic                 // sub-program x matches once from here
	opMark                   // slot x = position (restored on backtracking)
	opProgress               // leave the loop (go to y) unless position moved since slot x was marked
)

type inst struct {
	op   opcode
	neg  bool
	r    rune
	x, y int32
	set  *runeSet
}

type program struct {
	insts []inst
	// first[pc] is the set of code points a match from pc can start with,
	// or nil when pc may match without consuming one (no pruning then).
	first []*runeSet
}

// regex is a compiled pattern, safe for concurrent use.
type regex struct {
	src   string
	progs []*program // progs[0] is the pattern; the rest are look-around and atomic bodies
	slots int
	pool  sync.Pool
}

func compileRegex(src string) (*regex, error) {
	node, err := parseRegex(src)
	if err != nil {
		return nil, err
	}
	re := &regex{src: src}
	c := &reCompiler{re: re}
	if _, err := c.program(node); err != nil {
		return nil, &regexError{src, 0, err.Error()}
	}
	for _, p := range re.progs {
		p.first = firstSets(p)
	}
	re.pool.New = func() any { return &machine{slots: make([]int, re.slots)} }
	return re, nil
}

type reCompiler struct {
	re    *regex
	total int
}

// program compiles node into a new sub-program ending in opMatch and
// returns its index.
func (c *reCompiler) program(node *reNode) (int, error) {
	p := &program{}
	idx := len(c.re.progs)
	c.re.progs = append(c.re.progs, p)
	if err := c.emit(p, node); err != nil {
		return 0, err
	}
	c.add(p, inst{op: opMatch})
	if c.total > maxRegexInsts {
		return 0, errRegexTooLarge
	}
	return idx, nil
}

func (c *reCompiler) add(p *program, in inst) int {
	p.insts = append(p.insts, in)
	c.total++
	return len(p.insts) - 1
}

func (c *reCompiler) emit(p *program, n *reNode) error {
	if c.total > maxRegexInsts {
		return errRegexTooLarge
	}
	switch n.kind {
	case reEmpty:
	case reChar:
		if n.lit >= 0 {
			c.add(p, inst{op: opRune, r: n.lit})
		} else {
			c.add(p, inst{op: opSet, set: n.set})
		}
	case reConcat:
		for _, s := range n.subs {
			if err := c.emit(p, s); err != nil {
				return err
			}
		}
	case reAlt:
		var jumps []int
		for i, s := range n.subs {
			if i == len(n.subs)-1 {
				if err := c.emit(p, s); err != nil {
					return err
				}
				break
			}
			split := c.add(p, inst{op: opSplit})
			p.insts[split].x = int32(len(p.insts))
			if err := c.emit(p, s); err != nil {
				return err
			}
			jumps = append(jumps, c.add(p, inst{op: opJmp}))
			p.insts[split].y = int32(len(p.insts))
		}
		for _, j := range jumps {
			p.insts[j].x = int32(len(p.insts))
		}
	case reRepeat:
		return c.repeat(p, n)
	case reAssert:
		c.add(p, inst{op: opAssert, x: int32(n.assert)})
	case reLook:
		width := int32(-1)
		if n.behind {
			w, ok := fixedWidth(n.subs[0])
			if !ok {
				return fmt.Errorf("look-behind of variable length")
			}
			width = int32(w)
		}
		sub, err := c.program(n.subs[0])
		if err != nil {
			return err
		}
		c.add(p, inst{op: opLook, x: int32(sub), y: width, neg: n.negate})
	case reAtomic:
		sub, err := c.program(n.subs[0])
		if err != nil {
			return err
		}
		c.add(p, inst{op: opAtomic, x: int32(sub)})
	}
	return nil
}

// repeat emits min copies of the body and then either a loop or max-min
// nested optional copies. A loop whose body can match the empty string
// leaves the loop after a turn that consumed nothing, as Oniguruma's empty
// check does.
func (c *reCompiler) repeat(p *program, n *reNode) error {
	body := n.subs[0]
	for i := 0; i < n.min; i++ {
		if err := c.emit(p, body); err != nil {
			return err
		}
	}
	split := func() int {
		return c.add(p, inst{op: opSplit})
	}
	// prefer sets the split's preferred branch to "into the body" unless lazy.
	prefer := func(at, into, past int) {
		if n.lazy {
			p.insts[at].x, p.insts[at].y = int32(past), int32(into)
		} else {
			p.insts[at].x, p.insts[at].y = int32(into), int32(past)
		}
	}
	if n.max < 0 {
		nullable := canBeEmpty(body)
		slot := 0
		if nullable {
			slot = c.re.slots
			c.re.slots++
		}
		loop := split()
		into := len(p.insts)
		if nullable {
			c.add(p, inst{op: opMark, x: int32(slot)})
		}
		if err := c.emit(p, body); err != nil {
			return err
		}
		progress := -1
		if nullable {
			progress = c.add(p, inst{op: opProgress, x: int32(slot)})
		}
		c.add(p, inst{op: opJmp, x: int32(loop)})
		prefer(loop, into, len(p.insts))
		if progress >= 0 {
			p.insts[progress].y = int32(len(p.insts))
		}
		return nil
	}
	var splits []int
	for i := n.min; i < n.max; i++ {
		s := split()
		splits = append(splits, s)
		if err := c.emit(p, body); err != nil {
			return err
		}
	}
	end := len(p.insts)
	for _, s := range splits {
		prefer(s, s+1, end)
	}
	return nil
}

func canBeEmpty(n *reNode) bool {
	switch n.kind {
	case reChar:
		return false
	case reConcat:
		for _, s := range n.subs {
			if !canBeEmpty(s) {
				return false
			}
		}
		return true
	case reAlt:
		for _, s := range n.subs {
			if canBeEmpty(s) {
				return true
			}
		}
		return false
	case reRepeat:
		return n.min == 0 || canBeEmpty(n.subs[0])
	case reAtomic:
		return canBeEmpty(n.subs[0])
	}
	return true // empty, assertions, look-around
}

// fixedWidth returns the number of code points every match of n spans.
func fixedWidth(n *reNode) (int, bool) {
	switch n.kind {
	case reEmpty, reAssert, reLook:
		return 0, true
	case reChar:
		return 1, true
	case reConcat:
		total := 0
		for _, s := range n.subs {
			w, ok := fixedWidth(s)
			if !ok {
				return 0, false
			}
			total += w
		}
		return total, true
	case reAlt:
		w0 := -1
		for _, s := range n.subs {
			w, ok := fixedWidth(s)
			if !ok || w0 >= 0 && w != w0 {
				return 0, false
			}
			w0 = w
		}
		return w0, true
	case reRepeat:
		if n.min != n.max {
			return 0, false
		}
		w, ok := fixedWidth(n.subs[0])
		return w * n.min, ok
	case reAtomic:
		return fixedWidth(n.subs[0])
	}
	return 0, false
}

// firstSets computes, per instruction, which code points a match from it
// can start with, so that the matcher skips alternatives that cannot match
// the next code point.
func firstSets(p *program) []*runeSet {
	type state uint8
	const (
		unvisited state = iota
		visiting
		done
	)
	states := make([]state, len(p.insts))
	first := make([]*runeSet, len(p.insts))
	var visit func(pc int) *runeSet
	visit = func(pc int) *runeSet {
		switch states[pc] {
		case visiting:
			return nil // a cycle without consuming: no pruning
		case done:
			return first[pc]
		}
		states[pc] = visiting
		in := &p.insts[pc]
		var s *runeSet
		switch in.op {
		case opRune:
			r := in.r
			s = newRuneSet(func(c rune) bool { return c == r })
		case opSet:
			s = in.set
		case opJmp:
			s = visit(int(in.x))
		case opSplit:
			a, b := visit(int(in.x)), visit(int(in.y))
			if a != nil && b != nil {
				s = &runeSet{
					ascii: [2]uint64{a.ascii[0] | b.ascii[0], a.ascii[1] | b.ascii[1]},
					match: func(c rune) bool { return a.match(c) || b.match(c) },
				}
			}
		}
		states[pc] = done
		first[pc] = s
		return s
	}
	for pc := range p.insts {
		visit(pc)
	}
	return first
}

// Bounds on one search: after memoStart steps the matcher remembers the
// (instruction, position) pairs it has visited, when that fits in
// memoMaxBits, so that no pair is explored twice and the search takes at
// most instructions × length steps. A pair explored in a failed attempt
// fails from any later start too, so the memory holds across the start
// positions of one search. Without it (a very long text), past maxSteps
// the search gives up and reports no match. A whole findAll may take
// stepsPerByte steps per byte of text (real tokenizer patterns take about
// ten) before it stops looking for further matches.
const (
	memoStart    = 1 << 12
	memoMaxBits  = 1 << 25
	maxSteps     = 1 << 26
	stepsPerByte = 1 << 10
)

type btEntry struct {
	pc, pos int32
	slot    int32 // >= 0: restore slots[slot] = pos
}

type machine struct {
	stack     []btEntry
	slots     []int
	visited   []uint64
	steps     int // in this search
	budget    int // steps left for the whole findAll
	origin    int // the search's first start position
	memoWidth int // positions the visited set covers; 0: not set up
}

// findWith returns the leftmost match at or after from.
func (re *regex) findWith(m *machine, s string, from int) (start, end int, ok bool) {
	first := re.progs[0].first
	m.steps, m.origin, m.memoWidth = 0, from, 0
	m.visited = m.visited[:0]
	for start = from; start <= len(s); {
		r, w := rune(-1), 1
		if start < len(s) {
			r, w = utf8.DecodeRuneInString(s[start:])
		}
		if f := first[0]; f == nil || r >= 0 && f.has(r) {
			if end, ok = m.run(re, 0, s, start, true); ok {
				return start, end, true
			}
			if m.steps > maxSteps || m.budget < 0 {
				return 0, 0, false
			}
		}
		if start == len(s) {
			break
		}
		start += w
	}
	return 0, 0, false
}

// findAll calls fn for each successive non-overlapping match, as Rust's
// find_iter: an empty match right after the previous match is skipped.
func (re *regex) findAll(s string, fn func(start, end int)) {
	m := re.pool.Get().(*machine)
	defer re.pool.Put(m)
	m.budget = stepsPerByte*len(s) + 1<<20
	pos, lastEnd := 0, -1
	for pos <= len(s) {
		start, end, ok := re.findWith(m, s, pos)
		if !ok {
			return
		}
		if start == end && start == lastEnd {
			if start >= len(s) {
				return
			}
			_, w := utf8.DecodeRuneInString(s[start:])
			pos = start + w
			continue
		}
		fn(start, end)
		lastEnd = end
		if end > start {
			pos = end
		} else {
			if end >= len(s) {
				return
			}
			_, w := utf8.DecodeRuneInString(s[end:])
			pos = end + w
		}
	}
}

func (m *machine) push(e btEntry) { m.stack = append(m.stack, e) }

// run matches program prog anchored at pos and returns the end of the
// first match in priority order.
func (m *machine) run(re *regex, prog int, s string, pos int, top bool) (int, bool) {
	p := re.progs[prog]
	base := len(m.stack)
	defer func() { m.stack = m.stack[:base] }()
	m.push(btEntry{pc: 0, pos: int32(pos), slot: -1})
	for len(m.stack) > base {
		e := m.stack[len(m.stack)-1]
		m.stack = m.stack[:len(m.stack)-1]
		if e.slot >= 0 {
			m.slots[e.slot] = int(e.pos)
			continue
		}
		pc, pos := int(e.pc), int(e.pos)
	thread:
		for {
			m.steps++
			m.budget--
			if m.budget < 0 {
				return 0, false
			}
			if m.steps > memoStart && top {
				if m.steps > maxSteps {
					return 0, false
				}
				if m.memoWidth == 0 {
					m.memoWidth = len(s) - m.origin + 1
					bits := len(p.insts) * m.memoWidth
					if bits <= memoMaxBits {
						n := (bits + 63) / 64
						if cap(m.visited) < n {
							m.visited = make([]uint64, n)
						}
						m.visited = m.visited[:n]
						clear(m.visited)
					} else {
						m.visited = m.visited[:0]
					}
				}
				if len(m.visited) > 0 {
					bit := pc*m.memoWidth + pos - m.origin
					if m.visited[bit/64]&(1<<(bit%64)) != 0 {
						break thread
					}
					m.visited[bit/64] |= 1 << (bit % 64)
				}
			}
			in := &p.insts[pc]
			switch in.op {
			case opRune:
				if pos < len(s) {
					if c := s[pos]; c < utf8.RuneSelf {
						if rune(c) == in.r {
							pos++
							pc++
							continue
						}
					} else if r, w := utf8.DecodeRuneInString(s[pos:]); r == in.r {
						pos += w
						pc++
						continue
					}
				}
				break thread
			case opSet:
				if pos < len(s) {
					if c := s[pos]; c < utf8.RuneSelf {
						if in.set.ascii[c>>6]&(1<<(c&63)) != 0 {
							pos++
							pc++
							continue
						}
					} else if r, w := utf8.DecodeRuneInString(s[pos:]); in.set.match(r) {
						pos += w
						pc++
						continue
					}
				}
				break thread
			case opSplit:
				x, y := int(in.x), int(in.y)
				r := rune(-1)
				if pos < len(s) {
					if c := s[pos]; c < utf8.RuneSelf {
						r = rune(c)
					} else {
						r, _ = utf8.DecodeRuneInString(s[pos:])
					}
				}
				takeX, takeY := p.viable(x, r), p.viable(y, r)
				switch {
				case takeX && takeY:
					m.push(btEntry{pc: int32(y), pos: int32(pos), slot: -1})
					pc = x
				case takeX:
					pc = x
				case takeY:
					pc = y
				default:
					break thread
				}
			case opJmp:
				pc = int(in.x)
			case opMatch:
				return pos, true
			case opAssert:
				if !assertAt(assertKind(in.x), s, pos) {
					break thread
				}
				pc++
			case opLook:
				at := pos
				if in.y >= 0 {
					for i := int32(0); i < in.y; i++ {
						if at == 0 {
							at = -1
							break
						}
						_, w := utf8.DecodeLastRuneInString(s[:at])
						at -= w
					}
				}
				matched := false
				if at >= 0 {
					var end int
					end, matched = m.run(re, int(in.x), s, at, false)
					if in.y >= 0 && end != pos {
						matched = false
					}
				}
				if matched == in.neg {
					break thread
				}
				pc++
			case opAtomic:
				end, ok := m.run(re, int(in.x), s, pos, false)
				if !ok {
					break thread
				}
				pos = end
				pc++
			case opMark:
				slot := int(in.x)
				m.push(btEntry{pos: int32(m.slots[slot]), slot: int32(slot)})
				m.slots[slot] = pos
				pc++
			case opProgress:
				if m.slots[int(in.x)] == pos {
					pc = int(in.y)
				} else {
					pc++
				}
			}
		}
	}
	return 0, false
}

// viable reports whether a match from pc could start with r (r < 0: at the
// end of the text).
func (p *program) viable(pc int, r rune) bool {
	f := p.first[pc]
	if f == nil {
		return true
	}
	return r >= 0 && f.has(r)
}

func assertAt(k assertKind, s string, pos int) bool {
	switch k {
	case assertLineStart:
		return pos == 0 || s[pos-1] == '\n'
	case assertLineEnd:
		return pos == len(s) || s[pos] == '\n'
	case assertTextStart:
		return pos == 0
	case assertTextEnd:
		return pos == len(s)
	case assertTextEndNewline:
		return pos == len(s) || pos == len(s)-1 && s[pos] == '\n'
	case assertWordBoundary, assertNotWordBoundary:
		before, after := false, false
		if pos > 0 {
			r, _ := utf8.DecodeLastRuneInString(s[:pos])
			before = isOnigWordChar(r)
		}
		if pos < len(s) {
			r, _ := utf8.DecodeRuneInString(s[pos:])
			after = isOnigWordChar(r)
		}
		return (before != after) == (k == assertWordBoundary)
	}
	return false
}
