package tokenizer

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The patterns in tokenizer.json (Split and Replace) are written for
// Oniguruma with Ruby syntax, the engine the Rust tokenizers library uses.
// They need what Go's regexp lacks (look-ahead such as `\s+(?!\S)`), so this
// file parses them into a small program for the backtracking matcher in
// regex_exec.go, with Oniguruma's meaning where the two differ: leftmost
// first alternation, Unicode \s \d \w, `(?i:...)` with simple case folding,
// `^`/`$` at line boundaries, `(?m)` making `.` match newlines.

// Limits that keep a hostile pattern from taking unbounded memory.
const (
	maxPatternLen   = 1 << 16
	maxRegexInsts   = 1 << 17
	maxRepeatCount  = 1000
	maxPatternDepth = 200
)

// runeSet is a set of code points: a bitmap for ASCII and a predicate for
// the rest.
type runeSet struct {
	ascii [2]uint64
	match func(rune) bool
}

func newRuneSet(match func(rune) bool) *runeSet {
	s := &runeSet{match: match}
	for r := rune(0); r < 128; r++ {
		if match(r) {
			s.ascii[r>>6] |= 1 << (r & 63)
		}
	}
	return s
}

func (s *runeSet) has(r rune) bool {
	if r < 128 && r >= 0 {
		return s.ascii[r>>6]&(1<<(r&63)) != 0
	}
	return s.match(r)
}

type reKind uint8

const (
	reEmpty  reKind = iota
	reChar          // one code point in set
	reConcat        // subs in order
	reAlt           // subs, first that matches wins
	reRepeat        // subs[0] repeated min..max (max < 0: unbounded)
	reAssert        // a zero-width test, assert
	reLook          // look-around of subs[0]
	reAtomic        // subs[0] matched once, never backtracked into
)

type assertKind uint8

const (
	assertLineStart assertKind = iota
	assertLineEnd
	assertTextStart
	assertTextEnd
	assertTextEndNewline // \Z: end, or before a final \n
	assertWordBoundary
	assertNotWordBoundary
)

type reNode struct {
	kind     reKind
	set      *runeSet
	lit      rune // reChar: the code point when the set is a single literal, else -1
	subs     []*reNode
	min, max int
	lazy     bool
	assert   assertKind
	negate   bool // reLook: (?! or (?<!
	behind   bool // reLook: look-behind
}

// regexError is a pattern the parser refuses, with the offset in the
// pattern where it stopped.
type regexError struct {
	pattern string
	offset  int
	msg     string
}

func (e *regexError) Error() string {
	p := e.pattern
	if len(p) > 80 {
		p = p[:80] + "…"
	}
	return fmt.Sprintf("regex %q at offset %d: %s", p, e.offset, e.msg)
}

type reParser struct {
	src    string
	pos    int
	fold   bool // (?i)
	dotAll bool // (?m) in Ruby syntax: . matches \n
	depth  int
}

func parseRegex(src string) (*reNode, error) {
	if len(src) > maxPatternLen {
		return nil, &regexError{src, 0, fmt.Sprintf("pattern longer than %d bytes", maxPatternLen)}
	}
	if !utf8.ValidString(src) {
		return nil, &regexError{src, 0, "pattern is not valid UTF-8"}
	}
	p := &reParser{src: src}
	n, err := p.alternation()
	if err != nil {
		return nil, err
	}
	if p.pos < len(p.src) {
		return nil, p.errorf("unmatched )")
	}
	return n, nil
}

func (p *reParser) errorf(format string, args ...any) error {
	return &regexError{p.src, p.pos, fmt.Sprintf(format, args...)}
}

func (p *reParser) eof() bool { return p.pos >= len(p.src) }

func (p *reParser) peek() rune {
	r, _ := utf8.DecodeRuneInString(p.src[p.pos:])
	return r
}

func (p *reParser) next() rune {
	r, w := utf8.DecodeRuneInString(p.src[p.pos:])
	p.pos += w
	return r
}

func (p *reParser) consume(prefix string) bool {
	if strings.HasPrefix(p.src[p.pos:], prefix) {
		p.pos += len(prefix)
		return true
	}
	return false
}

func (p *reParser) alternation() (*reNode, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxPatternDepth {
		return nil, p.errorf("nesting deeper than %d", maxPatternDepth)
	}
	var branches []*reNode
	for {
		b, err := p.concatenation()
		if err != nil {
			return nil, err
		}
		branches = append(branches, b)
		if p.eof() || p.peek() != '|' {
			break
		}
		p.pos++
	}
	if len(branches) == 1 {
		return branches[0], nil
	}
	return &reNode{kind: reAlt, subs: branches}, nil
}

func (p *reParser) concatenation() (*reNode, error) {
	var items []*reNode
	for !p.eof() {
		c := p.peek()
		if c == '|' || c == ')' {
			break
		}
		atom, err := p.atom()
		if err != nil {
			return nil, err
		}
		if atom == nil { // a flag group such as (?i) or a comment
			continue
		}
		atom, err = p.quantifiers(atom)
		if err != nil {
			return nil, err
		}
		items = append(items, atom)
	}
	switch len(items) {
	case 0:
		return &reNode{kind: reEmpty}, nil
	case 1:
		return items[0], nil
	}
	return &reNode{kind: reConcat, subs: items}, nil
}

// quantifiers applies the quantifiers that follow an atom. Ruby syntax
// makes ?+ *+ ++ possessive, while {n,m}+ repeats the repetition again.
func (p *reParser) quantifiers(atom *reNode) (*reNode, error) {
	for !p.eof() {
		start := p.pos
		var min, max int
		braces := false
		switch p.peek() {
		case '*':
			p.pos++
			min, max = 0, -1
		case '+':
			p.pos++
			min, max = 1, -1
		case '?':
			p.pos++
			min, max = 0, 1
		case '{':
			lo, hi, ok := p.braceQuantifier()
			if !ok {
				return atom, nil // a literal {, read as the next atom
			}
			min, max, braces = lo, hi, true
		default:
			return atom, nil
		}
		if atom.kind == reAssert || atom.kind == reLook {
			return nil, &regexError{p.src, start, "quantifier after a zero-width assertion"}
		}
		rep := &reNode{kind: reRepeat, subs: []*reNode{atom}, min: min, max: max}
		if !p.eof() && p.peek() == '?' {
			p.pos++
			rep.lazy = true
		} else if !braces && !p.eof() && p.peek() == '+' {
			p.pos++
			rep = &reNode{kind: reAtomic, subs: []*reNode{rep}}
		}
		atom = rep
	}
	return atom, nil
}

// braceQuantifier reads {n}, {n,}, {n,m} or {,m}; ok is false (and nothing
// is consumed) when the brace does not start a valid quantifier.
func (p *reParser) braceQuantifier() (min, max int, ok bool) {
	rest := p.src[p.pos:]
	end := strings.IndexByte(rest, '}')
	if end < 0 {
		return 0, 0, false
	}
	body := rest[1:end]
	lo, hi, comma := strings.Cut(body, ",")
	if lo == "" && (!comma || hi == "") {
		return 0, 0, false
	}
	parse := func(s string) (int, bool) {
		if s == "" {
			return 0, true
		}
		for _, c := range s {
			if c < '0' || c > '9' {
				return 0, false
			}
		}
		n, err := strconv.Atoi(s)
		return n, err == nil && n <= maxRepeatCount
	}
	var good bool
	if min, good = parse(lo); !good {
		return 0, 0, false
	}
	switch {
	case !comma:
		max = min
	case hi == "":
		max = -1
	default:
		if max, good = parse(hi); !good || max < min {
			return 0, 0, false
		}
	}
	p.pos += end + 1
	return min, max, true
}

func (p *reParser) atom() (*reNode, error) {
	start := p.pos
	c := p.next()
	switch c {
	case '(':
		return p.group()
	case '[':
		set, err := p.class()
		if err != nil {
			return nil, err
		}
		// class() has folded the set before any negation.
		return &reNode{kind: reChar, set: newRuneSet(set), lit: -1}, nil
	case '.':
		if p.dotAll {
			return p.charNode(func(rune) bool { return true }, -1), nil
		}
		return p.charNode(func(r rune) bool { return r != '\n' }, -1), nil
	case '^':
		return &reNode{kind: reAssert, assert: assertLineStart}, nil
	case '$':
		return &reNode{kind: reAssert, assert: assertLineEnd}, nil
	case '\\':
		return p.escape()
	case '*', '+', '?':
		return nil, &regexError{p.src, start, "quantifier with nothing to repeat"}
	}
	return p.literal(c), nil
}

func (p *reParser) literal(c rune) *reNode {
	if p.fold && foldsToOthers(c) {
		return p.charNode(func(r rune) bool { return r == c }, -1)
	}
	return p.charNode(func(r rune) bool { return r == c }, c)
}

// charNode builds a one-code-point node; under (?i) the set also holds the
// simple case-fold equivalents of its members.
func (p *reParser) charNode(match func(rune) bool, lit rune) *reNode {
	if p.fold && lit < 0 {
		match = foldSet(match)
	}
	return &reNode{kind: reChar, set: newRuneSet(match), lit: lit}
}

// foldSet adds to a set the simple case-fold equivalents of its members.
func foldSet(base func(rune) bool) func(rune) bool {
	return func(r rune) bool {
		if base(r) {
			return true
		}
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if base(f) {
				return true
			}
		}
		return false
	}
}

func foldsToOthers(r rune) bool { return unicode.SimpleFold(r) != r }

func (p *reParser) group() (*reNode, error) {
	savedFold, savedDotAll := p.fold, p.dotAll
	defer func() { p.fold, p.dotAll = savedFold, savedDotAll }()
	node := &reNode{kind: reConcat}
	switch {
	case p.consume("?:"):
	case p.consume("?="):
		node = &reNode{kind: reLook}
	case p.consume("?!"):
		node = &reNode{kind: reLook, negate: true}
	case p.consume("?<="):
		node = &reNode{kind: reLook, behind: true}
	case p.consume("?<!"):
		node = &reNode{kind: reLook, behind: true, negate: true}
	case p.consume("?>"):
		node = &reNode{kind: reAtomic}
	case p.consume("?#"):
		end := strings.IndexByte(p.src[p.pos:], ')')
		if end < 0 {
			return nil, p.errorf("unterminated comment")
		}
		p.pos += end + 1
		return nil, nil
	case p.consume("?<"), p.consume("?P<"), p.consume("?'"):
		end := strings.IndexAny(p.src[p.pos:], ">'")
		if end < 0 {
			return nil, p.errorf("unterminated group name")
		}
		p.pos += end + 1
	case strings.HasPrefix(p.src[p.pos:], "?"):
		p.pos++
		scoped, err := p.flags()
		if err != nil {
			return nil, err
		}
		if !scoped {
			// (?i) applies to the rest of the enclosing group: keep the
			// flags past this group's restore.
			fold, dotAll := p.fold, p.dotAll
			savedFold, savedDotAll = fold, dotAll
			return nil, nil
		}
	}
	body, err := p.alternation()
	if err != nil {
		return nil, err
	}
	if p.eof() || p.peek() != ')' {
		return nil, p.errorf("missing )")
	}
	p.pos++
	if node.kind == reConcat {
		return body, nil
	}
	node.subs = []*reNode{body}
	return node, nil
}

// flags reads imx-imx followed by ) (scoped false: the flags hold until the
// enclosing group ends) or : (scoped true: a group with these flags).
func (p *reParser) flags() (scoped bool, err error) {
	on := true
	for !p.eof() {
		c := p.next()
		switch c {
		case 'i':
			p.fold = on
		case 'm':
			p.dotAll = on
		case 'x':
			if on {
				return false, p.errorf("extended mode (?x) is not supported")
			}
		case '-':
			on = false
		case ')':
			return false, nil
		case ':':
			return true, nil
		default:
			return false, p.errorf("unknown group flag %q", c)
		}
	}
	return false, p.errorf("unterminated group flags")
}

func (p *reParser) escape() (*reNode, error) {
	if p.eof() {
		return nil, p.errorf("trailing backslash")
	}
	c := p.next()
	switch c {
	case 'b':
		return &reNode{kind: reAssert, assert: assertWordBoundary}, nil
	case 'B':
		return &reNode{kind: reAssert, assert: assertNotWordBoundary}, nil
	case 'A':
		return &reNode{kind: reAssert, assert: assertTextStart}, nil
	case 'z':
		return &reNode{kind: reAssert, assert: assertTextEnd}, nil
	case 'Z':
		return &reNode{kind: reAssert, assert: assertTextEndNewline}, nil
	case 'G', 'K', 'R', 'X', 'N', 'O', 'Q', 'E', 'g', 'k', 'y', 'Y':
		return nil, p.errorf(`\%c is not supported`, c)
	}
	if '1' <= c && c <= '9' {
		return nil, p.errorf("back-references are not supported")
	}
	set, lit, err := p.escapeSet(c)
	if err != nil {
		return nil, err
	}
	if set != nil {
		return p.charNode(set, -1), nil
	}
	return p.literal(lit), nil
}

// escapeSet reads the escape after its backslash and letter c, returning
// either a class predicate or a literal code point.
func (p *reParser) escapeSet(c rune) (set func(rune) bool, lit rune, err error) {
	switch c {
	case 'd':
		return func(r rune) bool { return unicode.Is(unicode.Nd, r) }, 0, nil
	case 'D':
		return func(r rune) bool { return !unicode.Is(unicode.Nd, r) }, 0, nil
	case 's':
		return isWhitespace, 0, nil
	case 'S':
		return func(r rune) bool { return !isWhitespace(r) }, 0, nil
	case 'w':
		return isOnigWordChar, 0, nil
	case 'W':
		return func(r rune) bool { return !isOnigWordChar(r) }, 0, nil
	case 'h':
		return isHexDigit, 0, nil
	case 'H':
		return func(r rune) bool { return !isHexDigit(r) }, 0, nil
	case 'p', 'P':
		f, err := p.property()
		if err != nil {
			return nil, 0, err
		}
		if c == 'P' {
			return func(r rune) bool { return !f(r) }, 0, nil
		}
		return f, 0, nil
	case 'n':
		return nil, '\n', nil
	case 'r':
		return nil, '\r', nil
	case 't':
		return nil, '\t', nil
	case 'f':
		return nil, '\f', nil
	case 'v':
		return nil, '\v', nil
	case 'a':
		return nil, 7, nil
	case 'e':
		return nil, 0x1b, nil
	case 'x':
		if p.consume("{") {
			end := strings.IndexByte(p.src[p.pos:], '}')
			if end < 0 {
				return nil, 0, p.errorf(`unterminated \x{`)
			}
			r, err := parseCodePoint(p.src[p.pos : p.pos+end])
			if err != nil {
				return nil, 0, p.errorf("%v", err)
			}
			p.pos += end + 1
			return nil, r, nil
		}
		return nil, p.hexDigits(2), nil
	case 'u':
		return nil, p.hexDigits(4), nil
	case '0':
		var v rune
		for i := 0; i < 2 && !p.eof() && '0' <= p.peek() && p.peek() <= '7'; i++ {
			v = v*8 + p.next() - '0'
		}
		return nil, v, nil
	}
	if c < 0x80 && (unicode.IsLetter(c) || unicode.IsDigit(c)) {
		return nil, 0, p.errorf(`unknown escape \%c`, c)
	}
	return nil, c, nil
}

func (p *reParser) hexDigits(max int) rune {
	var v rune
	for i := 0; i < max && !p.eof() && isHexDigit(p.peek()); i++ {
		d := p.next()
		switch {
		case d <= '9':
			v = v*16 + d - '0'
		case d >= 'a':
			v = v*16 + d - 'a' + 10
		default:
			v = v*16 + d - 'A' + 10
		}
	}
	return v
}

func parseCodePoint(hex string) (rune, error) {
	v, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 32)
	if err != nil || v > unicode.MaxRune {
		return 0, fmt.Errorf("bad code point %q", hex)
	}
	return rune(v), nil
}

// property reads the name after \p or \P: {Name}, {^Name} or one letter.
func (p *reParser) property() (func(rune) bool, error) {
	var name string
	if p.consume("{") {
		end := strings.IndexByte(p.src[p.pos:], '}')
		if end < 0 {
			return nil, p.errorf(`unterminated \p{`)
		}
		name = p.src[p.pos : p.pos+end]
		p.pos += end + 1
	} else if !p.eof() {
		name = string(p.next())
	}
	negate := strings.HasPrefix(name, "^")
	name = strings.TrimPrefix(name, "^")
	if i := strings.IndexByte(name, '='); i >= 0 { // Script=Latin, gc=L
		name = name[i+1:]
	}
	f := propertyPredicate(name)
	if f == nil {
		return nil, p.errorf("unknown Unicode property %q", name)
	}
	if negate {
		return func(r rune) bool { return !f(r) }, nil
	}
	return f, nil
}

// class parses a bracket expression after its [ and returns its
// predicate: unions of items, nested classes, && intersections, POSIX
// [:name:] classes, ^ negation.
func (p *reParser) class() (func(rune) bool, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxPatternDepth {
		return nil, p.errorf("nesting deeper than %d", maxPatternDepth)
	}
	negate := p.consume("^")
	var items []func(rune) bool
	var ranges []rune
	first := true
	var and func(rune) bool
	for {
		if p.eof() {
			return nil, p.errorf("missing ]")
		}
		if p.peek() == ']' && !first {
			p.pos++
			break
		}
		if p.consume("&&") {
			rest, err := p.classRest()
			if err != nil {
				return nil, err
			}
			and = rest
			break
		}
		first = false
		if strings.HasPrefix(p.src[p.pos:], "[:") {
			if end := strings.Index(p.src[p.pos:], ":]"); end > 0 {
				name := p.src[p.pos+2 : p.pos+end]
				neg := strings.HasPrefix(name, "^")
				f := propertyPredicate(strings.TrimPrefix(name, "^"))
				if f == nil {
					return nil, p.errorf("unknown POSIX class %q", name)
				}
				p.pos += end + 2
				if neg {
					g := f
					f = func(r rune) bool { return !g(r) }
				}
				items = append(items, f)
				continue
			}
		}
		if p.consume("[") {
			sub, err := p.class()
			if err != nil {
				return nil, err
			}
			items = append(items, sub)
			continue
		}
		lo, set, err := p.classAtom()
		if err != nil {
			return nil, err
		}
		if set != nil {
			items = append(items, set)
			continue
		}
		hi := lo
		if strings.HasPrefix(p.src[p.pos:], "-") && !strings.HasPrefix(p.src[p.pos:], "-]") && !strings.HasPrefix(p.src[p.pos:], "-[") {
			p.pos++
			var hiSet func(rune) bool
			if hi, hiSet, err = p.classAtom(); err != nil {
				return nil, err
			}
			if hiSet != nil {
				return nil, p.errorf("range ending in a class")
			}
			if hi < lo {
				return nil, p.errorf("range out of order")
			}
		}
		ranges = append(ranges, lo, hi)
	}
	union := func(r rune) bool {
		for i := 0; i < len(ranges); i += 2 {
			if ranges[i] <= r && r <= ranges[i+1] {
				return true
			}
		}
		for _, f := range items {
			if f(r) {
				return true
			}
		}
		return false
	}
	match := union
	if and != nil {
		match = func(r rune) bool { return union(r) && and(r) }
	}
	if p.fold {
		// Under (?i) a class holds the case variants of its members, and
		// [^...] is the complement of that.
		match = foldSet(match)
	}
	if negate {
		return func(r rune) bool { return !match(r) }, nil
	}
	return match, nil
}

// classRest parses the right operand of && up to and including the ].
func (p *reParser) classRest() (func(rune) bool, error) {
	// The operand is itself a class body without the opening [.
	saved := p.pos
	// Reuse class(): it stops at the closing ] of the enclosing class.
	f, err := p.class()
	if err != nil {
		return nil, err
	}
	if p.pos == saved {
		return nil, p.errorf("empty operand of &&")
	}
	return f, nil
}

// classAtom reads one literal or escape inside a class.
func (p *reParser) classAtom() (rune, func(rune) bool, error) {
	if p.eof() {
		return 0, nil, p.errorf("missing ]")
	}
	c := p.next()
	if c != '\\' {
		return c, nil, nil
	}
	if p.eof() {
		return 0, nil, p.errorf("trailing backslash")
	}
	c = p.next()
	if c == 'b' {
		return '\b', nil, nil
	}
	set, lit, err := p.escapeSet(c)
	return lit, set, err
}

var errRegexTooLarge = errors.New("compiled pattern too large")
