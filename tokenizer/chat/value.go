package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Values are Go values of these types, as Python's: nil (None), Undefined,
// bool, int64, float64, string, []any (a list or tuple), *Dict, and the
// renderer's own namespace, loop, macro and function values.

// Undefined is the value of a name, attribute or item that does not exist
// (Jinja's default Undefined): false as a condition, "" when rendered, and
// an error in arithmetic or when its attributes are read.
type Undefined struct{ Name string }

// Dict is a mapping from strings to values that keeps its keys in
// insertion order, as Python's dict (tojson and items follow it).
type Dict struct {
	keys []string
	vals map[string]any
}

// NewDict returns an empty Dict.
func NewDict() *Dict { return &Dict{vals: map[string]any{}} }

// Set sets key to v, appending key if it is new.
func (d *Dict) Set(key string, v any) {
	if _, ok := d.vals[key]; !ok {
		d.keys = append(d.keys, key)
	}
	d.vals[key] = v
}

// Get returns the value of key.
func (d *Dict) Get(key string) (any, bool) {
	v, ok := d.vals[key]
	return v, ok
}

// Keys returns the keys in order.
func (d *Dict) Keys() []string { return d.keys }

// Len is the number of keys.
func (d *Dict) Len() int { return len(d.keys) }

// namespace is the mutable object namespace(...) makes.
type namespace struct{ attrs *Dict }

// function is a global, a filter-like callable or a bound method.
type function struct {
	name string
	call func(r *renderer, line int, args []any, kwargs *Dict) (any, error)
}

// maxJSONDepth bounds the nesting of JSON values read into Values.
const maxJSONDepth = 100

// FromJSON decodes one JSON value into a Value (objects become *Dict in
// their key order, integers int64 and other numbers float64).
func FromJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeJSON(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("more than one JSON value")
	}
	return v, nil
}

func decodeJSON(dec *json.Decoder, depth int) (any, error) {
	if depth > maxJSONDepth {
		return nil, fmt.Errorf("JSON nested more than %d deep", maxJSONDepth)
	}
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := t.(type) {
	case json.Delim:
		switch t {
		case '[':
			list := []any{}
			for dec.More() {
				v, err := decodeJSON(dec, depth+1)
				if err != nil {
					return nil, err
				}
				list = append(list, v)
			}
			_, err := dec.Token()
			return list, err
		case '{':
			d := NewDict()
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := decodeJSON(dec, depth+1)
				if err != nil {
					return nil, err
				}
				d.Set(k.(string), v)
			}
			_, err := dec.Token()
			return d, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	case json.Number:
		s := string(t)
		if !strings.ContainsAny(s, ".eE") {
			if i, err := strconv.ParseInt(s, 10, 64); err == nil {
				return i, nil
			}
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil && !math.IsInf(f, 0) {
			return nil, err
		}
		return f, nil
	}
	return t, nil // string, bool, nil
}

// typeName names a value's type as Python would.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "NoneType"
	case Undefined:
		return "Undefined"
	case bool:
		return "bool"
	case int64:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []any:
		return "list"
	case *Dict:
		return "dict"
	case *namespace:
		return "Namespace"
	case *loopInfo:
		return "LoopContext"
	case *macro:
		return "Macro"
	case *function:
		return "function"
	}
	return fmt.Sprintf("%T", v)
}

// truthy is Python's bool(v).
func truthy(v any) bool {
	switch v := v.(type) {
	case nil, Undefined:
		return false
	case bool:
		return v
	case int64:
		return v != 0
	case float64:
		return v != 0
	case string:
		return v != ""
	case []any:
		return len(v) > 0
	case *Dict:
		return v.Len() > 0
	}
	return true
}

// errTooLarge ends a repr or str longer than its limit.
var errTooLarge = errors.New("too large")

// toStr is Python's str(v), as {{ v }} renders it (Undefined renders
// empty), refused (errTooLarge, or an error naming the nesting) when
// longer than limit bytes.
func toStr(v any, limit int) (string, error) {
	switch v := v.(type) {
	case string:
		if len(v) > limit {
			return "", errTooLarge
		}
		return v, nil
	case Undefined:
		return "", nil
	}
	w := reprWriter{limit: limit}
	if err := w.write(v, 0); err != nil {
		return "", err
	}
	return w.b.String(), nil
}

// shortStr is str(v) for an error message: at most a few hundred bytes.
func shortStr(v any) string {
	const limit = 200
	s, err := toStr(v, limit)
	if err != nil {
		w := reprWriter{limit: limit}
		w.write(v, 0)
		return w.b.String() + "..."
	}
	return s
}

// reprWriter writes Python's repr of a value, up to a limit. The dicts
// it is inside of are kept, so that a namespace holding itself writes
// {...} as Python does for a dict inside itself.
type reprWriter struct {
	b     strings.Builder
	limit int
	open  []*Dict
}

func (w *reprWriter) str(s string) error {
	if w.b.Len()+len(s) > w.limit {
		return errTooLarge
	}
	w.b.WriteString(s)
	return nil
}

func (w *reprWriter) write(v any, depth int) error {
	if depth > maxNesting {
		return fmt.Errorf("a value nested more than %d deep", maxNesting)
	}
	if w.b.Len() > w.limit {
		return errTooLarge
	}
	switch v := v.(type) {
	case nil:
		return w.str("None")
	case Undefined:
		return nil
	case bool:
		if v {
			return w.str("True")
		}
		return w.str("False")
	case int64:
		return w.str(strconv.FormatInt(v, 10))
	case float64:
		return w.str(pyFloat(v, false))
	case string:
		if len(v) > w.limit {
			return errTooLarge
		}
		writePyStringRepr(&w.b, v)
	case []any:
		w.b.WriteByte('[')
		for i, x := range v {
			if i > 0 {
				w.b.WriteString(", ")
			}
			if err := w.write(x, depth+1); err != nil {
				return err
			}
		}
		return w.str("]")
	case *Dict:
		if slices.Contains(w.open, v) {
			return w.str("{...}")
		}
		w.open = append(w.open, v)
		w.b.WriteByte('{')
		for i, k := range v.keys {
			if i > 0 {
				w.b.WriteString(", ")
			}
			writePyStringRepr(&w.b, k)
			w.b.WriteString(": ")
			if err := w.write(v.vals[k], depth+1); err != nil {
				return err
			}
		}
		w.open = w.open[:len(w.open)-1]
		return w.str("}")
	case *namespace:
		w.b.WriteString("<Namespace ")
		if err := w.write(v.attrs, depth+1); err != nil {
			return err
		}
		return w.str(">")
	default:
		return w.str("<" + typeName(v) + ">")
	}
	return nil
}

// pyFloat formats f as Python's repr does (json: as json.dumps does).
func pyFloat(f float64, json bool) string {
	switch {
	case math.IsNaN(f):
		if json {
			return "NaN"
		}
		return "nan"
	case math.IsInf(f, 1):
		if json {
			return "Infinity"
		}
		return "inf"
	case math.IsInf(f, -1):
		if json {
			return "-Infinity"
		}
		return "-inf"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // d.dddde±XX, shortest
	mant, expPart, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(expPart)
	neg := strings.HasPrefix(mant, "-")
	mant = strings.TrimPrefix(mant, "-")
	digits := strings.Replace(mant, ".", "", 1)
	var s string
	if exp < -4 || exp >= 16 {
		s = digits[:1]
		if len(digits) > 1 {
			s += "." + digits[1:]
		}
		sign := "+"
		if exp < 0 {
			sign, exp = "-", -exp
		}
		s += fmt.Sprintf("e%s%02d", sign, exp)
	} else if exp < 0 {
		s = "0." + strings.Repeat("0", -exp-1) + digits
	} else if exp+1 >= len(digits) {
		s = digits + strings.Repeat("0", exp+1-len(digits)) + ".0"
	} else {
		s = digits[:exp+1] + "." + digits[exp+1:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// writePyStringRepr writes Python's repr of a str.
func writePyStringRepr(b *strings.Builder, s string) {
	quote := byte('\'')
	if strings.ContainsRune(s, '\'') && !strings.ContainsRune(s, '"') {
		quote = '"'
	}
	b.WriteByte(quote)
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == rune(quote):
			b.WriteByte('\\')
			b.WriteByte(quote)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(b, `\x%02x`, r)
		case r >= 0x80 && !unicode.IsPrint(r) && r != ' ':
			switch {
			case r <= 0xff:
				fmt.Fprintf(b, `\x%02x`, r)
			case r <= 0xffff:
				fmt.Fprintf(b, `\u%04x`, r)
			default:
				fmt.Fprintf(b, `\U%08x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte(quote)
}

// jsonOptions are tojson's keyword arguments.
type jsonOptions struct {
	indent      string // "" with hasIndent: newlines without indentation
	hasIndent   bool
	itemSep     string
	keySep      string
	sortKeys    bool
	ensureASCII bool
	maxBytes    int
}

var errJSONTooLarge = errors.New("too large")

// writeJSON writes v as Python's json.dumps(v, ensure_ascii, indent,
// separators, sort_keys) does.
func writeJSON(b *strings.Builder, v any, o *jsonOptions, level int) error {
	if b.Len() > o.maxBytes {
		return errJSONTooLarge
	}
	if level > maxJSONDepth {
		return fmt.Errorf("nested more than %d deep", maxJSONDepth)
	}
	newline := func(level int) {
		if o.hasIndent {
			b.WriteByte('\n')
			for range level {
				b.WriteString(o.indent)
			}
		}
	}
	switch v := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		if v {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	case int64:
		b.WriteString(strconv.FormatInt(v, 10))
	case float64:
		b.WriteString(pyFloat(v, true))
	case string:
		writeJSONString(b, v, o.ensureASCII)
	case []any:
		if len(v) == 0 {
			b.WriteString("[]")
			return nil
		}
		b.WriteByte('[')
		for i, x := range v {
			if i > 0 {
				b.WriteString(o.itemSep)
			}
			newline(level + 1)
			if err := writeJSON(b, x, o, level+1); err != nil {
				return err
			}
		}
		newline(level)
		b.WriteByte(']')
	case *Dict:
		d := v
		if d.Len() == 0 {
			b.WriteString("{}")
			return nil
		}
		keys := d.keys
		if o.sortKeys {
			keys = slices.Clone(keys)
			slices.Sort(keys)
		}
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteString(o.itemSep)
			}
			newline(level + 1)
			writeJSONString(b, k, o.ensureASCII)
			b.WriteString(o.keySep)
			if err := writeJSON(b, d.vals[k], o, level+1); err != nil {
				return err
			}
		}
		newline(level)
		b.WriteByte('}')
	default:
		return fmt.Errorf("Object of type %s is not JSON serializable", typeName(v))
	}
	return nil
}

// writeJSONString writes s as Python's json module does.
func writeJSONString(b *strings.Builder, s string, ensureASCII bool) {
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			switch {
			case r < 0x20 || ensureASCII && r >= 0x7f:
				if r > 0xffff {
					r1, r2 := utf16Pair(r)
					fmt.Fprintf(b, `\u%04x\u%04x`, r1, r2)
				} else {
					fmt.Fprintf(b, `\u%04x`, r)
				}
			default:
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}

func utf16Pair(r rune) (rune, rune) {
	r -= 0x10000
	return 0xD800 + (r>>10)&0x3FF, 0xDC00 + r&0x3FF
}

// runeLen is len(s) in Python: code points.
func runeLen(s string) int { return utf8.RuneCountInString(s) }

// equal is Python's == on two values; budget is the number of items it
// may compare (a list holding the same list twice, built up repeatedly,
// has exponentially many), and comparing more ends it with errTooLarge.
func equal(a, b any, budget *int, depth int) (bool, error) {
	*budget--
	if *budget < 0 {
		return false, errTooLarge
	}
	if depth > maxNesting {
		return false, fmt.Errorf("a value nested more than %d deep", maxNesting)
	}
	switch a := a.(type) {
	case nil:
		return b == nil, nil
	case Undefined:
		_, ok := b.(Undefined)
		return ok, nil
	case bool:
		switch b := b.(type) {
		case bool:
			return a == b, nil
		case int64, float64:
			return equal(boolInt(a), b, budget, depth)
		}
		return false, nil
	case int64:
		switch b := b.(type) {
		case int64:
			return a == b, nil
		case float64:
			return float64(a) == b, nil
		case bool:
			return a == boolInt(b), nil
		}
		return false, nil
	case float64:
		switch b := b.(type) {
		case int64:
			return a == float64(b), nil
		case float64:
			return a == b, nil
		case bool:
			return a == float64(boolInt(b)), nil
		}
		return false, nil
	case string:
		bs, ok := b.(string)
		if ok && len(a) == len(bs) {
			*budget -= len(a) / scanBytes // compared byte by byte
		}
		return ok && a == bs, nil
	case []any:
		bl, ok := b.([]any)
		if !ok || len(a) != len(bl) {
			return false, nil
		}
		if len(a) == 0 || &a[0] == &bl[0] {
			return true, nil // the same list, equal as Python's identity check makes it
		}
		for i := range a {
			if eq, err := equal(a[i], bl[i], budget, depth+1); !eq || err != nil {
				return false, err
			}
		}
		return true, nil
	case *Dict:
		bd, ok := b.(*Dict)
		if !ok || a.Len() != bd.Len() {
			return false, nil
		}
		if a == bd {
			return true, nil
		}
		for _, k := range a.keys {
			bv, ok := bd.vals[k]
			if !ok {
				return false, nil
			}
			if eq, err := equal(a.vals[k], bv, budget, depth+1); !eq || err != nil {
				return false, err
			}
		}
		return true, nil
	}
	return a == b, nil
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
