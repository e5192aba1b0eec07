package chat

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// node is a statement of a template body.
type node interface{ nodeLine() int }

type (
	textNode   struct{ text string }
	outputNode struct {
		line int
		expr expr
	}
	ifNode struct {
		line   int
		conds  []expr
		bodies [][]node // one per cond
		orElse []node
	}
	forNode struct {
		line    int
		targets []string // one name, or the names a tuple unpacks into
		iter    expr
		filter  expr // the "if" of "for x in xs if cond"; nil when none
		body    []node
		orElse  []node
	}
	setNode struct {
		line    int
		targets []string // names; one, or a tuple's
		ns      string   // "ns" of "set ns.attr = …" ("" otherwise)
		attr    string
		value   expr   // nil for a block set
		body    []node // {% set x %}…{% endset %}
	}
	macroNode struct {
		line   int
		name   string
		params []param
		body   []node
		// Whether the body reads varargs or kwargs: then, as in Jinja, the
		// macro takes extra positional or keyword arguments into them.
		varargs, kwargs bool
	}
	loopControlNode struct {
		line    int
		isBreak bool
	}
	// generationNode is {% generation %}…{% endgeneration %}, which marks
	// assistant text for Hugging Face's assistant-token masks; it renders
	// its body.
	generationNode struct {
		line int
		body []node
	}
	// filterBlockNode is {% filter f %}…{% endfilter %}.
	filterBlockNode struct {
		line   int
		filter *filterExpr
		body   []node
	}
)

type param struct {
	name string
	def  expr // nil: required
}

func (n *textNode) nodeLine() int        { return 0 }
func (n *outputNode) nodeLine() int      { return n.line }
func (n *ifNode) nodeLine() int          { return n.line }
func (n *forNode) nodeLine() int         { return n.line }
func (n *setNode) nodeLine() int         { return n.line }
func (n *macroNode) nodeLine() int       { return n.line }
func (n *loopControlNode) nodeLine() int { return n.line }
func (n *generationNode) nodeLine() int  { return n.line }
func (n *filterBlockNode) nodeLine() int { return n.line }

// expr is an expression.
type expr interface{ exprLine() int }

type (
	literalExpr struct {
		line  int
		value any
	}
	nameExpr struct {
		line int
		name string
	}
	listExpr struct {
		line  int
		items []expr
	}
	dictExpr struct {
		line       int
		keys, vals []expr
	}
	attrExpr struct {
		line int
		obj  expr
		name string
	}
	itemExpr struct {
		line       int
		obj, index expr
	}
	sliceExpr struct {
		line              int
		obj, lo, hi, step expr // nil where omitted
	}
	callExpr struct {
		line   int
		fn     expr
		args   []expr
		kwargs []kwargExpr
	}
	kwargExpr struct {
		name  string
		value expr
	}
	filterExpr struct {
		line   int
		value  expr // nil in a filter block
		name   string
		args   []expr
		kwargs []kwargExpr
	}
	testExpr struct {
		line    int
		value   expr
		name    string
		args    []expr
		negated bool
	}
	unaryExpr struct {
		line int
		op   string // "-", "+", "not"
		x    expr
	}
	binaryExpr struct {
		line int
		op   string // + - * / // % ** ~ and or
		a, b expr
	}
	// compareExpr is a chain a op1 b op2 c …, as Python's.
	compareExpr struct {
		line     int
		first    expr
		ops      []string // == != < <= > >= in "not in"
		operands []expr
	}
	condExpr struct {
		line              int
		then, cond, else_ expr // else_ nil: undefined
	}
)

func (e *literalExpr) exprLine() int { return e.line }
func (e *nameExpr) exprLine() int    { return e.line }
func (e *listExpr) exprLine() int    { return e.line }
func (e *dictExpr) exprLine() int    { return e.line }
func (e *attrExpr) exprLine() int    { return e.line }
func (e *itemExpr) exprLine() int    { return e.line }
func (e *sliceExpr) exprLine() int   { return e.line }
func (e *callExpr) exprLine() int    { return e.line }
func (e *filterExpr) exprLine() int  { return e.line }
func (e *testExpr) exprLine() int    { return e.line }
func (e *unaryExpr) exprLine() int   { return e.line }
func (e *binaryExpr) exprLine() int  { return e.line }
func (e *compareExpr) exprLine() int { return e.line }
func (e *condExpr) exprLine() int    { return e.line }

// parser builds the statement tree from the tokens.
type parser struct {
	name  string
	toks  []token
	pos   int
	depth int
	ends  []string       // the tags that close or continue the innermost open block
	names map[string]int // reads of varargs and kwargs so far (see macroNode)
}

// maxNesting bounds the nesting of blocks and expressions, so a template
// cannot exhaust the stack.
const maxNesting = 200

func (p *parser) errorf(line int, format string, args ...any) error {
	return &Error{Template: p.name, Line: line, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) peek() token { return p.toks[p.pos] }

func (p *parser) next() token {
	t := p.toks[p.pos]
	if t.kind != tokEOF {
		p.pos++
	}
	return t
}

func (p *parser) isOp(op string) bool {
	t := p.peek()
	return t.kind == tokOp && t.text == op
}

func (p *parser) isName(name string) bool {
	t := p.peek()
	return t.kind == tokName && t.text == name
}

func (p *parser) expectOp(op string) error {
	if !p.isOp(op) {
		return p.errorf(p.peek().line, "expected %q, found %s", op, describe(p.peek()))
	}
	p.next()
	return nil
}

func (p *parser) expectName() (string, error) {
	t := p.peek()
	if t.kind != tokName {
		return "", p.errorf(t.line, "expected a name, found %s", describe(t))
	}
	p.next()
	return t.text, nil
}

func (p *parser) expectBlockEnd() error {
	if t := p.peek(); t.kind != tokBlockEnd {
		return p.errorf(t.line, "expected the end of the tag %%}, found %s", describe(t))
	}
	p.next()
	return nil
}

func describe(t token) string {
	switch t.kind {
	case tokText:
		return "template text"
	case tokBlockBegin:
		return "{%"
	case tokBlockEnd:
		return "%}"
	case tokVarBegin:
		return "{{"
	case tokVarEnd:
		return "}}"
	case tokString:
		return "a string " + strconv.Quote(t.text)
	case tokEOF:
		return "the end of the template"
	}
	return strconv.Quote(t.text)
}

func (p *parser) enter(line int) error {
	p.depth++
	if p.depth > maxNesting {
		return p.errorf(line, "nested more than %d deep", maxNesting)
	}
	return nil
}

func (p *parser) leave() { p.depth-- }

// operator counts one more operator of a chain ("a ~ b ~ c"): the chain
// becomes a tree as deep as it is long, which rendering walks
// recursively, so chains count against the nesting limit too. The caller
// gives the depth back when its chain ends (see chainEnd).
func (p *parser) operator(line int) error {
	p.depth++
	if p.depth > maxNesting {
		return p.errorf(line, "an expression nested more than %d deep (brackets, and operators in a row)", maxNesting)
	}
	return nil
}

// chainEnd gives back the depth the operators since depth took.
func (p *parser) chainEnd(depth int) { p.depth = depth }

// parseBody parses statements until a block tag whose name is one of
// ends (which it does not consume: p is left at the tag's name), or the
// end of the template when ends is empty.
func (p *parser) parseBody(ends ...string) ([]node, string, error) {
	defer func(was []string) { p.ends = was }(p.ends)
	p.ends = ends
	var body []node
	for {
		t := p.peek()
		switch t.kind {
		case tokEOF:
			if len(ends) > 0 {
				return nil, "", p.errorf(t.line, "unexpected end of the template: expected {%% %s %%}", ends[len(ends)-1])
			}
			return body, "", nil
		case tokText:
			p.next()
			body = append(body, &textNode{text: t.text})
		case tokVarBegin:
			p.next()
			e, err := p.parseExpr()
			if err != nil {
				return nil, "", err
			}
			if t := p.peek(); t.kind != tokVarEnd {
				return nil, "", p.errorf(t.line, "expected the end of the expression }}, found %s", describe(t))
			}
			p.next()
			body = append(body, &outputNode{line: t.line, expr: e})
		case tokBlockBegin:
			name := p.toks[p.pos+1]
			if name.kind == tokName && slices.Contains(ends, name.text) {
				p.next()
				return body, name.text, nil
			}
			p.next()
			n, err := p.parseStatement()
			if err != nil {
				return nil, "", err
			}
			if n != nil {
				body = append(body, n)
			}
		default:
			return nil, "", p.errorf(t.line, "unexpected %s", describe(t))
		}
	}
}

// parseStatement parses the block tag after its {%.
func (p *parser) parseStatement() (node, error) {
	t := p.next()
	if t.kind != tokName {
		return nil, p.errorf(t.line, "expected a statement name after {%%, found %s", describe(t))
	}
	if err := p.enter(t.line); err != nil {
		return nil, err
	}
	defer p.leave()
	switch t.text {
	case "if":
		return p.parseIf(t.line)
	case "for":
		return p.parseFor(t.line)
	case "set":
		return p.parseSet(t.line)
	case "macro":
		return p.parseMacro(t.line)
	case "break", "continue":
		return &loopControlNode{line: t.line, isBreak: t.text == "break"}, p.expectBlockEnd()
	case "generation":
		if err := p.expectBlockEnd(); err != nil {
			return nil, err
		}
		body, _, err := p.parseBody("endgeneration")
		if err != nil {
			return nil, err
		}
		return &generationNode{line: t.line, body: body}, p.endTag()
	case "filter":
		name, err := p.expectName()
		if err != nil {
			return nil, err
		}
		f := &filterExpr{line: t.line, name: name}
		if p.isOp("(") {
			if f.args, f.kwargs, err = p.parseArgs(); err != nil {
				return nil, err
			}
		}
		if err := p.expectBlockEnd(); err != nil {
			return nil, err
		}
		body, _, err := p.parseBody("endfilter")
		if err != nil {
			return nil, err
		}
		return &filterBlockNode{line: t.line, filter: f, body: body}, p.endTag()
	}
	switch t.text {
	case "endif", "endfor", "endset", "endmacro", "endfilter", "endgeneration", "endraw", "else", "elif":
		if len(p.ends) > 0 {
			return nil, p.errorf(t.line, "{%% %s %%} where the block open here expects {%% %s %%}", t.text, strings.Join(p.ends, " %}, {% "))
		}
		return nil, p.errorf(t.line, "{%% %s %%} without the block it would close or continue", t.text)
	}
	return nil, p.errorf(t.line, "unknown statement {%% %s %%} (this renderer knows if, for, set, macro, break, continue, filter, generation, raw)", t.text)
}

// endTag consumes the rest of an end tag ({% endif %} after its name).
func (p *parser) endTag() error {
	p.next() // the name
	return p.expectBlockEnd()
}

func (p *parser) parseIf(line int) (node, error) {
	n := &ifNode{line: line}
	for {
		cond, err := p.parseExpr()
		if err != nil {
			return nil, err
		}
		if err := p.expectBlockEnd(); err != nil {
			return nil, err
		}
		body, end, err := p.parseBody("elif", "else", "endif")
		if err != nil {
			return nil, err
		}
		n.conds = append(n.conds, cond)
		n.bodies = append(n.bodies, body)
		p.next() // the name
		switch end {
		case "elif":
			continue
		case "else":
			if err := p.expectBlockEnd(); err != nil {
				return nil, err
			}
			if n.orElse, _, err = p.parseBody("endif"); err != nil {
				return nil, err
			}
			return n, p.endTag()
		}
		return n, p.expectBlockEnd()
	}
}

func (p *parser) parseFor(line int) (node, error) {
	n := &forNode{line: line}
	for {
		name, err := p.expectName()
		if err != nil {
			return nil, err
		}
		n.targets = append(n.targets, name)
		if !p.isOp(",") {
			break
		}
		p.next()
	}
	if !p.isName("in") {
		return nil, p.errorf(p.peek().line, "expected \"in\" in the for loop, found %s", describe(p.peek()))
	}
	p.next()
	var err error
	// The iterable is parsed without a conditional expression, so that
	// "for x in xs if c" filters.
	if n.iter, err = p.parseOr(); err != nil {
		return nil, err
	}
	if p.isName("if") {
		p.next()
		if n.filter, err = p.parseOr(); err != nil {
			return nil, err
		}
	}
	if p.isName("recursive") {
		return nil, p.errorf(p.peek().line, "recursive loops are not supported")
	}
	if err := p.expectBlockEnd(); err != nil {
		return nil, err
	}
	body, end, err := p.parseBody("else", "endfor")
	if err != nil {
		return nil, err
	}
	n.body = body
	if end == "else" {
		p.next()
		if err := p.expectBlockEnd(); err != nil {
			return nil, err
		}
		if n.orElse, _, err = p.parseBody("endfor"); err != nil {
			return nil, err
		}
	}
	return n, p.endTag()
}

func (p *parser) parseSet(line int) (node, error) {
	n := &setNode{line: line}
	name, err := p.expectName()
	if err != nil {
		return nil, err
	}
	switch {
	case p.isOp("."):
		p.next()
		if n.attr, err = p.expectName(); err != nil {
			return nil, err
		}
		n.ns = name
	default:
		n.targets = []string{name}
		for p.isOp(",") {
			p.next()
			name, err := p.expectName()
			if err != nil {
				return nil, err
			}
			n.targets = append(n.targets, name)
		}
	}
	if p.peek().kind == tokBlockEnd && n.ns == "" && len(n.targets) == 1 {
		p.next()
		body, _, err := p.parseBody("endset")
		if err != nil {
			return nil, err
		}
		n.body = body
		return n, p.endTag()
	}
	if err := p.expectOp("="); err != nil {
		return nil, err
	}
	if n.value, err = p.parseTuple(); err != nil {
		return nil, err
	}
	return n, p.expectBlockEnd()
}

func (p *parser) parseMacro(line int) (node, error) {
	n := &macroNode{line: line}
	var err error
	if n.name, err = p.expectName(); err != nil {
		return nil, err
	}
	if err := p.expectOp("("); err != nil {
		return nil, err
	}
	for !p.isOp(")") {
		name, err := p.expectName()
		if err != nil {
			return nil, err
		}
		prm := param{name: name}
		if p.isOp("=") {
			p.next()
			if prm.def, err = p.parseExpr(); err != nil {
				return nil, err
			}
		}
		n.params = append(n.params, prm)
		if !p.isOp(",") {
			break
		}
		p.next()
	}
	if err := p.expectOp(")"); err != nil {
		return nil, err
	}
	if err := p.expectBlockEnd(); err != nil {
		return nil, err
	}
	varargs, kwargs := p.names["varargs"], p.names["kwargs"]
	if n.body, _, err = p.parseBody("endmacro"); err != nil {
		return nil, err
	}
	n.varargs, n.kwargs = p.names["varargs"] > varargs, p.names["kwargs"] > kwargs
	return n, p.endTag()
}

// parseTuple parses an expression, or a tuple of them written without
// parentheses ("set a, b = 1, 2").
func (p *parser) parseTuple() (expr, error) {
	line := p.peek().line
	first, err := p.parseExpr()
	if err != nil || !p.isOp(",") {
		return first, err
	}
	items := []expr{first}
	for p.isOp(",") {
		p.next()
		if p.peek().kind == tokBlockEnd {
			break
		}
		e, err := p.parseExpr()
		if err != nil {
			return nil, err
		}
		items = append(items, e)
	}
	return &listExpr{line: line, items: items}, nil
}

// parseExpr parses a full expression, conditional expressions included.
func (p *parser) parseExpr() (expr, error) {
	line := p.peek().line
	defer p.chainEnd(p.depth)
	if err := p.enter(line); err != nil {
		return nil, err
	}
	then, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	for chained := false; p.isName("if"); chained = true {
		// "a if b if c": each further "if" nests the one before (an
		// else's expression nests by recursion, counted there).
		if ifLine := p.next().line; chained {
			if err := p.operator(ifLine); err != nil {
				return nil, err
			}
		}
		cond, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		c := &condExpr{line: line, then: then, cond: cond}
		if p.isName("else") {
			p.next()
			if c.else_, err = p.parseExpr(); err != nil {
				return nil, err
			}
		}
		then = c
	}
	return then, nil
}

func (p *parser) parseOr() (expr, error) {
	defer p.chainEnd(p.depth)
	a, err := p.parseAnd()
	for err == nil && p.isName("or") {
		line := p.next().line
		if err = p.operator(line); err != nil {
			break
		}
		var b expr
		if b, err = p.parseAnd(); err == nil {
			a = &binaryExpr{line: line, op: "or", a: a, b: b}
		}
	}
	return a, err
}

func (p *parser) parseAnd() (expr, error) {
	defer p.chainEnd(p.depth)
	a, err := p.parseNot()
	for err == nil && p.isName("and") {
		line := p.next().line
		if err = p.operator(line); err != nil {
			break
		}
		var b expr
		if b, err = p.parseNot(); err == nil {
			a = &binaryExpr{line: line, op: "and", a: a, b: b}
		}
	}
	return a, err
}

func (p *parser) parseNot() (expr, error) {
	if p.isName("not") {
		line := p.next().line
		if err := p.enter(line); err != nil {
			return nil, err
		}
		defer p.leave()
		x, err := p.parseNot()
		if err != nil {
			return nil, err
		}
		return &unaryExpr{line: line, op: "not", x: x}, nil
	}
	return p.parseCompare()
}

func (p *parser) parseCompare() (expr, error) {
	line := p.peek().line
	first, err := p.parseMath1()
	if err != nil {
		return nil, err
	}
	c := &compareExpr{line: line, first: first}
	for {
		t := p.peek()
		var op string
		switch {
		case t.kind == tokOp && (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == "<=" || t.text == ">" || t.text == ">="):
			op = t.text
			p.next()
		case p.isName("in"):
			op = "in"
			p.next()
		case p.isName("not") && p.toks[p.pos+1].kind == tokName && p.toks[p.pos+1].text == "in":
			op = "not in"
			p.pos += 2
		}
		if op == "" {
			break
		}
		operand, err := p.parseMath1()
		if err != nil {
			return nil, err
		}
		c.ops = append(c.ops, op)
		c.operands = append(c.operands, operand)
	}
	if len(c.ops) == 0 {
		return first, nil
	}
	return c, nil
}

func (p *parser) parseMath1() (expr, error) {
	defer p.chainEnd(p.depth)
	a, err := p.parseConcat()
	for err == nil && (p.isOp("+") || p.isOp("-")) {
		t := p.next()
		if err = p.operator(t.line); err != nil {
			break
		}
		var b expr
		if b, err = p.parseConcat(); err == nil {
			a = &binaryExpr{line: t.line, op: t.text, a: a, b: b}
		}
	}
	return a, err
}

func (p *parser) parseConcat() (expr, error) {
	defer p.chainEnd(p.depth)
	a, err := p.parseMath2()
	for err == nil && p.isOp("~") {
		t := p.next()
		if err = p.operator(t.line); err != nil {
			break
		}
		var b expr
		if b, err = p.parseMath2(); err == nil {
			a = &binaryExpr{line: t.line, op: "~", a: a, b: b}
		}
	}
	return a, err
}

func (p *parser) parseMath2() (expr, error) {
	defer p.chainEnd(p.depth)
	a, err := p.parsePow()
	for err == nil && (p.isOp("*") || p.isOp("/") || p.isOp("//") || p.isOp("%")) {
		t := p.next()
		if err = p.operator(t.line); err != nil {
			break
		}
		var b expr
		if b, err = p.parsePow(); err == nil {
			a = &binaryExpr{line: t.line, op: t.text, a: a, b: b}
		}
	}
	return a, err
}

func (p *parser) parsePow() (expr, error) {
	defer p.chainEnd(p.depth)
	a, err := p.parseUnary(true)
	for err == nil && p.isOp("**") {
		t := p.next()
		if err = p.operator(t.line); err != nil {
			break
		}
		var b expr
		if b, err = p.parseUnary(true); err == nil {
			a = &binaryExpr{line: t.line, op: "**", a: a, b: b}
		}
	}
	return a, err
}

func (p *parser) parseUnary(withFilter bool) (expr, error) {
	t := p.peek()
	var x expr
	var err error
	if t.kind == tokOp && (t.text == "-" || t.text == "+") {
		p.next()
		if err := p.enter(t.line); err != nil {
			return nil, err
		}
		defer p.leave()
		inner, err := p.parseUnary(false)
		if err != nil {
			return nil, err
		}
		x = &unaryExpr{line: t.line, op: t.text, x: inner}
	} else {
		if x, err = p.parsePrimary(); err != nil {
			return nil, err
		}
	}
	if x, err = p.parsePostfix(x); err != nil {
		return nil, err
	}
	if withFilter {
		return p.parseFilterAndTest(x)
	}
	return x, nil
}

func (p *parser) parsePrimary() (expr, error) {
	t := p.next()
	switch t.kind {
	case tokName:
		switch t.text {
		case "true", "True":
			return &literalExpr{line: t.line, value: true}, nil
		case "false", "False":
			return &literalExpr{line: t.line, value: false}, nil
		case "none", "None":
			return &literalExpr{line: t.line, value: nil}, nil
		}
		if t.text == "varargs" || t.text == "kwargs" {
			p.names[t.text]++
		}
		return &nameExpr{line: t.line, name: t.text}, nil
	case tokString:
		s := t.text
		// Adjacent string literals are joined, as Python's.
		for p.peek().kind == tokString {
			s += p.next().text
		}
		return &literalExpr{line: t.line, value: s}, nil
	case tokInt:
		v, err := strconv.ParseInt(t.text, 10, 64)
		if err != nil {
			text := t.text
			if len(text) > 40 {
				text = fmt.Sprintf("%s… (%d digits)", text[:20], len(text))
			}
			return nil, p.errorf(t.line, "integer literal %s out of range", text)
		}
		return &literalExpr{line: t.line, value: v}, nil
	case tokFloat:
		v, err := strconv.ParseFloat(t.text, 64)
		if err != nil && !math.IsInf(v, 0) {
			return nil, p.errorf(t.line, "bad number %s", t.text)
		}
		return &literalExpr{line: t.line, value: v}, nil
	case tokOp:
		switch t.text {
		case "(":
			if p.isOp(")") {
				p.next()
				return &listExpr{line: t.line}, nil
			}
			e, err := p.parseExpr()
			if err != nil {
				return nil, err
			}
			if p.isOp(",") {
				items := []expr{e}
				for p.isOp(",") {
					p.next()
					if p.isOp(")") {
						break
					}
					item, err := p.parseExpr()
					if err != nil {
						return nil, err
					}
					items = append(items, item)
				}
				e = &listExpr{line: t.line, items: items}
			}
			return e, p.expectOp(")")
		case "[":
			l := &listExpr{line: t.line}
			for !p.isOp("]") {
				item, err := p.parseExpr()
				if err != nil {
					return nil, err
				}
				l.items = append(l.items, item)
				if !p.isOp(",") {
					break
				}
				p.next()
			}
			return l, p.expectOp("]")
		case "{":
			d := &dictExpr{line: t.line}
			for !p.isOp("}") {
				k, err := p.parseExpr()
				if err != nil {
					return nil, err
				}
				if err := p.expectOp(":"); err != nil {
					return nil, err
				}
				v, err := p.parseExpr()
				if err != nil {
					return nil, err
				}
				d.keys, d.vals = append(d.keys, k), append(d.vals, v)
				if !p.isOp(",") {
					break
				}
				p.next()
			}
			return d, p.expectOp("}")
		}
	}
	return nil, p.errorf(t.line, "expected an expression, found %s", describe(t))
}

// parsePostfix parses attribute access, subscripts, slices and calls.
func (p *parser) parsePostfix(x expr) (expr, error) {
	for steps := 0; ; steps++ {
		if steps > maxNesting {
			return nil, p.errorf(p.peek().line, "more than %d attribute, subscript or call suffixes", maxNesting)
		}
		t := p.peek()
		switch {
		case p.isOp("."):
			p.next()
			nt := p.next()
			switch nt.kind {
			case tokName:
				x = &attrExpr{line: t.line, obj: x, name: nt.text}
			case tokInt:
				v, _ := strconv.ParseInt(nt.text, 10, 64)
				x = &itemExpr{line: t.line, obj: x, index: &literalExpr{line: t.line, value: v}}
			default:
				return nil, p.errorf(t.line, "expected a name after \".\", found %s", describe(nt))
			}
		case p.isOp("["):
			p.next()
			var err error
			if x, err = p.parseSubscript(t.line, x); err != nil {
				return nil, err
			}
		case p.isOp("("):
			args, kwargs, err := p.parseArgs()
			if err != nil {
				return nil, err
			}
			x = &callExpr{line: t.line, fn: x, args: args, kwargs: kwargs}
		default:
			return x, nil
		}
	}
}

// parseSubscript parses what follows "[": an index or a slice.
func (p *parser) parseSubscript(line int, obj expr) (expr, error) {
	var parts [3]expr
	n := 0 // colons seen
	for {
		if p.isOp("]") {
			p.next()
			break
		}
		if p.isOp(":") {
			p.next()
			n++
			if n > 2 {
				return nil, p.errorf(line, "a slice has at most two colons")
			}
			continue
		}
		if parts[n] != nil {
			return nil, p.errorf(p.peek().line, "expected \":\" or \"]\" in a subscript, found %s", describe(p.peek()))
		}
		e, err := p.parseExpr()
		if err != nil {
			return nil, err
		}
		parts[n] = e
	}
	if n == 0 {
		if parts[0] == nil {
			return nil, p.errorf(line, "empty subscript []")
		}
		return &itemExpr{line: line, obj: obj, index: parts[0]}, nil
	}
	return &sliceExpr{line: line, obj: obj, lo: parts[0], hi: parts[1], step: parts[2]}, nil
}

// parseArgs parses a call's parenthesized arguments.
func (p *parser) parseArgs() ([]expr, []kwargExpr, error) {
	if err := p.expectOp("("); err != nil {
		return nil, nil, err
	}
	var args []expr
	var kwargs []kwargExpr
	for !p.isOp(")") {
		if p.peek().kind == tokName && p.toks[p.pos+1].kind == tokOp && p.toks[p.pos+1].text == "=" {
			name := p.next().text
			p.next()
			v, err := p.parseExpr()
			if err != nil {
				return nil, nil, err
			}
			kwargs = append(kwargs, kwargExpr{name: name, value: v})
		} else {
			if len(kwargs) > 0 {
				return nil, nil, p.errorf(p.peek().line, "a positional argument follows a keyword argument")
			}
			v, err := p.parseExpr()
			if err != nil {
				return nil, nil, err
			}
			args = append(args, v)
		}
		if !p.isOp(",") {
			break
		}
		p.next()
	}
	return args, kwargs, p.expectOp(")")
}

// parseFilterAndTest parses "| filter" and "is test" suffixes.
func (p *parser) parseFilterAndTest(x expr) (expr, error) {
	for steps := 0; ; steps++ {
		if steps > maxNesting {
			return nil, p.errorf(p.peek().line, "more than %d filters", maxNesting)
		}
		switch {
		case p.isOp("|"):
			line := p.next().line
			name, err := p.expectName()
			if err != nil {
				return nil, err
			}
			f := &filterExpr{line: line, value: x, name: name}
			if p.isOp("(") {
				if f.args, f.kwargs, err = p.parseArgs(); err != nil {
					return nil, err
				}
			}
			if x, err = p.parsePostfix(f); err != nil {
				return nil, err
			}
		case p.isName("is"):
			line := p.next().line
			te := &testExpr{line: line, value: x}
			if p.isName("not") {
				p.next()
				te.negated = true
			}
			t := p.next()
			switch {
			case t.kind == tokName:
				te.name = t.text
			case t.kind == tokOp && (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == "<=" || t.text == ">" || t.text == ">="):
				te.name = t.text
			default:
				return nil, p.errorf(t.line, "expected a test name after \"is\", found %s", describe(t))
			}
			switch {
			case p.isOp("("):
				args, _, err := p.parseArgs()
				if err != nil {
					return nil, err
				}
				te.args = args
			case p.startsArgument():
				// "is divisibleby 3", "is equalto 'x'": one argument.
				arg, err := p.parseUnary(false)
				if err != nil {
					return nil, err
				}
				te.args = []expr{arg}
			}
			x = te
		default:
			return x, nil
		}
	}
}

// startsArgument reports whether the next token can start a test's
// argument written without parentheses.
func (p *parser) startsArgument() bool {
	t := p.peek()
	switch t.kind {
	case tokString, tokInt, tokFloat:
		return true
	case tokName:
		switch t.text {
		case "and", "or", "else", "if", "in", "is", "not":
			return false
		}
		return true
	case tokOp:
		return t.text == "[" || t.text == "{" || t.text == "-"
	}
	return false
}

// parse parses a template's tokens.
func parse(name string, toks []token) ([]node, error) {
	p := &parser{name: name, toks: toks, names: map[string]int{}}
	body, _, err := p.parseBody()
	return body, err
}
