package chat

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// tokenKind is the kind of a lexical token.
type tokenKind int

const (
	tokText       tokenKind = iota // template text between tags
	tokBlockBegin                  // {%
	tokBlockEnd                    // %}
	tokVarBegin                    // {{
	tokVarEnd                      // }}
	tokName
	tokString
	tokInt
	tokFloat
	tokOp // an operator or punctuation: + - * / // % ** ~ == != < <= > >= = ( ) [ ] { } , . : |
	tokEOF
)

type token struct {
	kind tokenKind
	text string // the text, name, operator, or a string literal's value
	line int
}

// lexer state for one template.
type lexer struct {
	name string
	src  string
	pos  int
	line int
	toks []token
}

// lex splits src into tokens, applying the whitespace control Hugging
// Face's chat templates are rendered with: trim_blocks and lstrip_blocks,
// and "-" inside a tag's delimiters.
func lex(name, src string) ([]token, error) {
	l := &lexer{name: name, src: src, line: 1}
	// stripNext: the previous tag ended with "-": strip the whitespace
	// that follows it; trimNewline: it was a block or comment (trim_blocks).
	stripNext, trimNewline := false, false
	for l.pos < len(src) {
		start := l.nextTag(l.pos)
		text := src[l.pos:start]
		textLine := l.line
		l.line += strings.Count(text, "\n")
		l.pos = start
		if stripNext {
			text = strings.TrimLeft(text, " \t\n\r\f\v")
		} else if trimNewline {
			if strings.HasPrefix(text, "\r\n") {
				text = text[2:]
			} else if strings.HasPrefix(text, "\n") {
				text = text[1:]
			}
		}
		stripNext, trimNewline = false, false
		if start < len(src) {
			tagKind := src[start+1]
			switch marker := byteAt(src, start+2); {
			case marker == '-':
				text = strings.TrimRight(text, " \t\n\r\f\v")
			case marker == '+':
			case tagKind == '%' || tagKind == '#':
				text = lstripBlock(text, src, start)
			}
		}
		if text != "" {
			l.toks = append(l.toks, token{kind: tokText, text: text, line: textLine})
		}
		if start >= len(src) {
			break
		}
		var err error
		switch src[start+1] {
		case '#':
			stripNext, err = l.comment()
			trimNewline = true
		case '%':
			if l.atRaw() {
				stripNext, err = l.raw()
				trimNewline = true
				break
			}
			stripNext, err = l.tag(tokBlockBegin, tokBlockEnd, "%}")
			trimNewline = true
		case '{':
			stripNext, err = l.tag(tokVarBegin, tokVarEnd, "}}")
		}
		if err != nil {
			return nil, err
		}
	}
	l.toks = append(l.toks, token{kind: tokEOF, line: l.line})
	return l.toks, nil
}

func byteAt(s string, i int) byte {
	if i < len(s) {
		return s[i]
	}
	return 0
}

// nextTag returns the index of the next "{{", "{%" or "{#" at or after
// i, or len(src).
func (l *lexer) nextTag(i int) int {
	for {
		j := strings.IndexByte(l.src[i:], '{')
		if j < 0 || i+j+1 >= len(l.src) {
			return len(l.src)
		}
		i += j
		if c := l.src[i+1]; c == '{' || c == '%' || c == '#' {
			return i
		}
		i++
	}
}

// lstripBlock removes the spaces and tabs that precede a block tag on its
// line (lstrip_blocks), when nothing else precedes it there.
func lstripBlock(text, src string, tagAt int) string {
	i := len(text)
	for i > 0 && (text[i-1] == ' ' || text[i-1] == '\t') {
		i--
	}
	if i > 0 && text[i-1] != '\n' {
		return text
	}
	if i == 0 {
		// The text is all blanks: the tag starts its line only if what
		// precedes the text in the source is a newline or the start.
		before := tagAt - len(text)
		if before > 0 && src[before-1] != '\n' {
			return text
		}
	}
	return text[:i]
}

func (l *lexer) errorf(format string, args ...any) error {
	return &Error{Template: l.name, Line: l.line, Msg: fmt.Sprintf(format, args...)}
}

// comment skips a {# … #} comment; stripNext reports a "-#}".
func (l *lexer) comment() (stripNext bool, err error) {
	startLine := l.line
	end := strings.Index(l.src[l.pos+2:], "#}")
	if end < 0 {
		l.line = startLine
		return false, l.errorf("comment {# is not closed by #}")
	}
	body := l.src[l.pos+2 : l.pos+2+end]
	l.line += strings.Count(body, "\n")
	l.pos += 2 + end + 2
	return strings.HasSuffix(body, "-"), nil
}

// atRaw reports whether the block tag at l.pos is {% raw %}.
func (l *lexer) atRaw() bool {
	s := l.src[l.pos+2:]
	s = strings.TrimLeft(strings.TrimPrefix(strings.TrimPrefix(s, "-"), "+"), " \t\n\r")
	if !strings.HasPrefix(s, "raw") {
		return false
	}
	s = strings.TrimLeft(s[3:], " \t\n\r")
	return strings.HasPrefix(s, "%}") || strings.HasPrefix(s, "-%}")
}

// raw copies the text of {% raw %} … {% endraw %} as it is.
func (l *lexer) raw() (stripNext bool, err error) {
	startLine := l.line
	open := strings.Index(l.src[l.pos:], "%}")
	bodyStart := l.pos + open + 2
	rest := l.src[bodyStart:]
	for i := 0; ; {
		j := strings.Index(rest[i:], "{%")
		if j < 0 {
			l.line = startLine
			return false, l.errorf("{%% raw %%} is not closed by {%% endraw %%}")
		}
		k := i + j + 2
		inner := strings.TrimLeft(strings.TrimPrefix(strings.TrimPrefix(rest[k:], "-"), "+"), " \t\n\r")
		if strings.HasPrefix(inner, "endraw") {
			after := strings.TrimLeft(inner[len("endraw"):], " \t\n\r")
			closeLen := 0
			switch {
			case strings.HasPrefix(after, "-%}"):
				stripNext, closeLen = true, 3
			case strings.HasPrefix(after, "%}"):
				closeLen = 2
			default:
				i = k
				continue
			}
			body := rest[:i+j]
			if open > 0 && l.src[l.pos+open-1] == '-' {
				body = strings.TrimLeft(body, " \t\n\r\f\v")
			}
			switch byteAt(rest, k) {
			case '-':
				body = strings.TrimRight(body, " \t\n\r\f\v")
			case '+':
			default:
				// lstrip_blocks: spaces and tabs alone on the line before
				// {% endraw %} go.
				nl := strings.LastIndexByte(body, '\n') + 1
				lineStart := nl > 0 || bodyStart == 0 || l.src[bodyStart-1] == '\n'
				if lineStart && strings.Trim(body[nl:], " \t") == "" {
					body = body[:nl]
				}
			}
			if body != "" {
				l.toks = append(l.toks, token{kind: tokText, text: body, line: startLine})
			}
			end := bodyStart + (len(rest) - len(after)) + closeLen
			l.line += strings.Count(l.src[l.pos:end], "\n")
			l.pos = end
			return stripNext, nil
		}
		i = k
	}
}

// tag lexes the expression tokens of a {% … %} or {{ … }} tag.
func (l *lexer) tag(begin, end tokenKind, closer string) (stripNext bool, err error) {
	openLine := l.line
	l.toks = append(l.toks, token{kind: begin, line: l.line})
	l.pos += 2
	if c := byteAt(l.src, l.pos); c == '-' || c == '+' {
		l.pos++
	}
	depth := 0
	for {
		// Blanks between tokens.
		for l.pos < len(l.src) {
			c := l.src[l.pos]
			if c == '\n' {
				l.line++
			} else if c != ' ' && c != '\t' && c != '\r' {
				break
			}
			l.pos++
		}
		if l.pos >= len(l.src) {
			l.line = openLine // where the tag opens, not the end of the file
			return false, l.errorf("tag is not closed by %s", closer)
		}
		rest := l.src[l.pos:]
		if depth == 0 {
			if strings.HasPrefix(rest, closer) {
				l.pos += 2
				l.toks = append(l.toks, token{kind: end, line: l.line})
				return false, nil
			}
			if rest[0] == '-' && strings.HasPrefix(rest[1:], closer) {
				l.pos += 3
				l.toks = append(l.toks, token{kind: end, line: l.line})
				return true, nil
			}
		}
		c := rest[0]
		switch {
		case c == '"' || c == '\'':
			s, n, err := unquote(rest)
			if err != nil {
				return false, l.errorf("%v", err)
			}
			l.toks = append(l.toks, token{kind: tokString, text: s, line: l.line})
			l.line += strings.Count(rest[:n], "\n")
			l.pos += n
		case c >= '0' && c <= '9':
			n, isFloat := scanNumber(rest)
			kind := tokInt
			if isFloat {
				kind = tokFloat
			}
			l.toks = append(l.toks, token{kind: kind, text: strings.ReplaceAll(rest[:n], "_", ""), line: l.line})
			l.pos += n
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			n := 1
			for n < len(rest) && (rest[n] == '_' || rest[n] >= 'a' && rest[n] <= 'z' || rest[n] >= 'A' && rest[n] <= 'Z' || rest[n] >= '0' && rest[n] <= '9') {
				n++
			}
			l.toks = append(l.toks, token{kind: tokName, text: rest[:n], line: l.line})
			l.pos += n
		default:
			op := ""
			for _, o := range []string{"//", "**", "==", "!=", "<=", ">="} {
				if strings.HasPrefix(rest, o) {
					op = o
					break
				}
			}
			if op == "" && strings.IndexByte("+-*/%~<>=()[]{},.:|", c) >= 0 {
				op = rest[:1]
			}
			if op == "" {
				r, _ := utf8.DecodeRuneInString(rest)
				return false, l.errorf("unexpected character %q in a tag", r)
			}
			switch op {
			case "(", "[", "{":
				depth++
			case ")", "]", "}":
				if depth > 0 {
					depth--
				}
			}
			l.toks = append(l.toks, token{kind: tokOp, text: op, line: l.line})
			l.pos += len(op)
		}
	}
}

// scanNumber returns the length of the number literal at the start of s
// and whether it is a float.
func scanNumber(s string) (n int, isFloat bool) {
	digits := func() {
		for n < len(s) && (s[n] >= '0' && s[n] <= '9' || s[n] == '_' && n+1 < len(s) && s[n+1] >= '0' && s[n+1] <= '9') {
			n++
		}
	}
	digits()
	if n+1 < len(s) && s[n] == '.' && s[n+1] >= '0' && s[n+1] <= '9' {
		n++
		isFloat = true
		digits()
	}
	if n < len(s) && (s[n] == 'e' || s[n] == 'E') {
		m := n + 1
		if m < len(s) && (s[m] == '+' || s[m] == '-') {
			m++
		}
		if m < len(s) && s[m] >= '0' && s[m] <= '9' {
			n = m
			isFloat = true
			digits()
		}
	}
	return n, isFloat
}

// unquote reads the Python string literal at the start of s, with its
// escapes, returning its value and length.
func unquote(s string) (string, int, error) {
	quote := s[0]
	var b strings.Builder
	for i := 1; i < len(s); {
		c := s[i]
		switch {
		case c == quote:
			return b.String(), i + 1, nil
		case c != '\\':
			b.WriteByte(c)
			i++
			continue
		}
		if i+1 >= len(s) {
			break
		}
		e := s[i+1]
		i += 2
		switch e {
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'v':
			b.WriteByte('\v')
		case 'a':
			b.WriteByte('\a')
		case '0':
			b.WriteByte(0)
		case '\\', '\'', '"':
			b.WriteByte(e)
		case '\n':
			// A line continuation.
		case 'x', 'u', 'U':
			n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[e]
			if i+n > len(s) {
				return "", 0, fmt.Errorf("truncated \\%c escape in a string literal", e)
			}
			v, err := strconv.ParseUint(s[i:i+n], 16, 32)
			if err != nil || v > utf8.MaxRune || v >= 0xD800 && v < 0xE000 {
				return "", 0, fmt.Errorf("bad \\%c escape %q in a string literal", e, s[i:i+n])
			}
			b.WriteRune(rune(v))
			i += n
		default:
			b.WriteByte('\\')
			b.WriteByte(e)
		}
	}
	return "", 0, fmt.Errorf("string literal is not closed by %c", quote)
}
