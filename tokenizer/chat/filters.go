package chat

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/language"
)

// RaisedError is the error of a template's raise_exception(message).
type RaisedError struct{ Message string }

func (e *RaisedError) Error() string { return e.Message }

// globals are the functions Hugging Face's renderer provides.
var globals = map[string]*function{}

func init() {
	globals["raise_exception"] = &function{name: "raise_exception", call: func(r *renderer, line int, args []any, _ *Dict) (any, error) {
		msg := ""
		if len(args) > 0 {
			msg = shortStr(args[0])
		}
		return nil, &Error{Template: r.t.name, Line: line, Msg: "the template raised an exception: " + msg, Raised: &RaisedError{Message: msg}}
	}}
	globals["namespace"] = &function{name: "namespace", call: func(r *renderer, line int, args []any, kwargs *Dict) (any, error) {
		ns := &namespace{attrs: NewDict()}
		for _, a := range args {
			d, ok := a.(*Dict)
			if !ok {
				return nil, r.errorf(line, "namespace() takes a dict or keyword arguments, not %s", r.describeValue(a))
			}
			for _, k := range d.keys {
				ns.attrs.Set(k, d.vals[k])
			}
		}
		for _, k := range kwargs.keys {
			ns.attrs.Set(k, kwargs.vals[k])
		}
		return ns, nil
	}}
	// dict(mapping or pairs, **kwargs), as Jinja's global (Python's dict
	// with string keys).
	globals["dict"] = &function{name: "dict", call: func(r *renderer, line int, args []any, kwargs *Dict) (any, error) {
		if len(args) > 1 {
			return nil, r.errorf(line, "dict() takes at most one positional argument, not %d", len(args))
		}
		d := NewDict()
		if len(args) == 1 {
			switch a := args[0].(type) {
			case *Dict:
				for _, k := range a.keys {
					d.Set(k, a.vals[k])
				}
			case []any:
				for _, it := range a {
					pair, ok := it.([]any)
					if !ok || len(pair) != 2 {
						return nil, r.errorf(line, "dict() takes pairs of a key and a value, not %s", r.describeValue(it))
					}
					k, ok := pair[0].(string)
					if !ok {
						return nil, r.errorf(line, "dict() keys are strings here, not %s", r.describeValue(pair[0]))
					}
					d.Set(k, pair[1])
				}
			default:
				return nil, r.errorf(line, "dict() takes a mapping or pairs, not %s", r.describeValue(a))
			}
		}
		for _, k := range kwargs.keys {
			d.Set(k, kwargs.vals[k])
		}
		return d, r.allocItems(line, int64(len(d.keys)))
	}}
	globals["range"] = &function{name: "range", call: func(r *renderer, line int, args []any, _ *Dict) (any, error) {
		var ints []int64
		for _, a := range args {
			i, ok := asIndex(a)
			if !ok {
				return nil, r.errorf(line, "range() takes integers, not %s", r.describeValue(a))
			}
			ints = append(ints, i)
		}
		start, stop, step := int64(0), int64(0), int64(1)
		switch len(ints) {
		case 1:
			stop = ints[0]
		case 2:
			start, stop = ints[0], ints[1]
		case 3:
			start, stop, step = ints[0], ints[1], ints[2]
		default:
			return nil, r.errorf(line, "range() takes 1 to 3 arguments, %d given", len(ints))
		}
		if step == 0 {
			return nil, r.errorf(line, "range() step must not be zero")
		}
		var n int64
		switch {
		case step > 0 && start < stop:
			n = (stop-start-1)/step + 1
		case step < 0 && start > stop:
			n = (start-stop-1)/-step + 1
		}
		if n > maxRange || n < 0 {
			return nil, r.errorf(line, "range() of more than %d numbers (Jinja's sandbox refuses them too)", maxRange)
		}
		if err := r.allocItems(line, n); err != nil {
			return nil, err
		}
		out := make([]any, n)
		for j := range out {
			out[j] = start + int64(j)*step
		}
		return out, nil
	}}
	globals["strftime_now"] = &function{name: "strftime_now", call: func(r *renderer, line int, args []any, _ *Dict) (any, error) {
		if len(args) != 1 {
			return nil, r.errorf(line, "strftime_now() takes a format")
		}
		format, ok := args[0].(string)
		if !ok {
			return nil, r.errorf(line, "strftime_now() takes a string format, not %s", r.describeValue(args[0]))
		}
		return strftime(r.t.now(), format), nil
	}}
}

// strftime formats t with Python's strftime directives (the common ones;
// others are kept as written).
func strftime(t time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		if format[i] != '%' || i+1 == len(format) {
			b.WriteByte(format[i])
			continue
		}
		i++
		switch format[i] {
		case 'd':
			fmt.Fprintf(&b, "%02d", t.Day())
		case 'm':
			fmt.Fprintf(&b, "%02d", int(t.Month()))
		case 'Y':
			fmt.Fprintf(&b, "%04d", t.Year())
		case 'y':
			fmt.Fprintf(&b, "%02d", t.Year()%100)
		case 'b':
			b.WriteString(t.Month().String()[:3])
		case 'B':
			b.WriteString(t.Month().String())
		case 'a':
			b.WriteString(t.Weekday().String()[:3])
		case 'A':
			b.WriteString(t.Weekday().String())
		case 'H':
			fmt.Fprintf(&b, "%02d", t.Hour())
		case 'I':
			fmt.Fprintf(&b, "%02d", (t.Hour()+11)%12+1)
		case 'M':
			fmt.Fprintf(&b, "%02d", t.Minute())
		case 'S':
			fmt.Fprintf(&b, "%02d", t.Second())
		case 'p':
			if t.Hour() < 12 {
				b.WriteString("AM")
			} else {
				b.WriteString("PM")
			}
		case 'j':
			fmt.Fprintf(&b, "%03d", t.YearDay())
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(format[i])
		}
	}
	return b.String()
}

// method makes a bound method of a fixed arity range.
func method(name string, minArgs, maxArgs int, call func(r *renderer, line int, args []any, kwargs *Dict) (any, error)) *function {
	return &function{name: name, call: func(r *renderer, line int, args []any, kwargs *Dict) (any, error) {
		if n := len(args) + kwargs.Len(); n < minArgs || n > maxArgs {
			return nil, r.errorf(line, "%s() takes %d to %d arguments, %d given", name, minArgs, maxArgs, n)
		}
		return call(r, line, args, kwargs)
	}}
}

// dictMethod returns the bound method name of d, or nil.
func dictMethod(d *Dict, name string) *function {
	switch name {
	case "items":
		return method("items", 0, 0, func(*renderer, int, []any, *Dict) (any, error) { return dictItems(d), nil })
	case "keys":
		return method("keys", 0, 0, func(*renderer, int, []any, *Dict) (any, error) {
			keys := make([]any, len(d.keys))
			for i, k := range d.keys {
				keys[i] = k
			}
			return keys, nil
		})
	case "values":
		return method("values", 0, 0, func(*renderer, int, []any, *Dict) (any, error) {
			vals := make([]any, len(d.keys))
			for i, k := range d.keys {
				vals[i] = d.vals[k]
			}
			return vals, nil
		})
	case "get":
		return method("get", 1, 2, func(r *renderer, line int, args []any, _ *Dict) (any, error) {
			if k, ok := args[0].(string); ok {
				if v, ok := d.vals[k]; ok {
					return v, nil
				}
			}
			if len(args) == 2 {
				return args[1], nil
			}
			return nil, nil
		})
	}
	return nil
}

func dictItems(d *Dict) []any {
	items := make([]any, len(d.keys))
	for i, k := range d.keys {
		items[i] = []any{k, d.vals[k]}
	}
	return items
}

// pyIsSpace is Python's str.isspace for one character.
func pyIsSpace(r rune) bool { return unicode.IsSpace(r) || r >= 0x1c && r <= 0x1f }

// stripChars strips, as Python's str.strip family, whitespace (chars
// nil or None) or the characters of chars.
func stripChars(r *renderer, line int, s string, args []any, left, right bool) (any, error) {
	cut := pyIsSpace
	if len(args) > 0 && args[0] != nil {
		chars, ok := args[0].(string)
		if !ok {
			return nil, r.errorf(line, "strip arg must be None or str, not %s", r.describeValue(args[0]))
		}
		cut = func(c rune) bool { return strings.ContainsRune(chars, c) }
	}
	if left {
		s = strings.TrimLeftFunc(s, cut)
	}
	if right {
		s = strings.TrimRightFunc(s, cut)
	}
	return s, nil
}

func argString(r *renderer, line int, fname string, v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", r.errorf(line, "%s() takes a string argument, not %s", fname, r.describeValue(v))
	}
	return s, nil
}

// stringMethod returns the bound method name of s, or nil.
func stringMethod(s string, name string) *function {
	switch name {
	case "startswith", "endswith":
		return method(name, 1, 1, func(r *renderer, line int, args []any, _ *Dict) (any, error) {
			test := strings.HasPrefix
			if name == "endswith" {
				test = strings.HasSuffix
			}
			affixes := []any{args[0]}
			if list, ok := args[0].([]any); ok {
				affixes = list
			}
			for _, a := range affixes {
				affix, err := argString(r, line, name, a)
				if err != nil {
					return nil, err
				}
				if test(s, affix) {
					return true, nil
				}
			}
			return false, nil
		})
	case "strip", "lstrip", "rstrip":
		return method(name, 0, 1, func(r *renderer, line int, args []any, _ *Dict) (any, error) {
			return stripChars(r, line, s, args, name != "rstrip", name != "lstrip")
		})
	case "split", "rsplit":
		return method(name, 0, 2, func(r *renderer, line int, args []any, kwargs *Dict) (any, error) {
			var sep any
			maxSplit := int64(-1)
			if len(args) > 0 {
				sep = args[0]
			} else if v, ok := kwargs.Get("sep"); ok {
				sep = v
			}
			if len(args) > 1 {
				maxSplit, _ = asIndex(args[1])
			} else if v, ok := kwargs.Get("maxsplit"); ok {
				maxSplit, _ = asIndex(v)
			}
			return pySplit(r, line, s, sep, maxSplit, name == "rsplit")
		})
	case "upper":
		return method(name, 0, 0, func(*renderer, int, []any, *Dict) (any, error) { return pyUpper(s), nil })
	case "lower":
		return method(name, 0, 0, func(*renderer, int, []any, *Dict) (any, error) { return pyLower(s), nil })
	case "title":
		return method(name, 0, 0, func(*renderer, int, []any, *Dict) (any, error) { return pyTitle(s), nil })
	case "capitalize":
		return method(name, 0, 0, func(*renderer, int, []any, *Dict) (any, error) { return pyCapitalize(s), nil })
	case "replace":
		return method(name, 2, 3, func(r *renderer, line int, args []any, _ *Dict) (any, error) {
			return pyReplace(r, line, s, args)
		})
	case "find", "count":
		return method(name, 1, 1, func(r *renderer, line int, args []any, _ *Dict) (any, error) {
			sub, err := argString(r, line, name, args[0])
			if err != nil {
				return nil, err
			}
			if name == "count" {
				if sub == "" {
					return int64(runeLen(s) + 1), nil
				}
				return int64(strings.Count(s, sub)), nil
			}
			i := strings.Index(s, sub)
			if i < 0 {
				return int64(-1), nil
			}
			return int64(runeLen(s[:i])), nil
		})
	case "join":
		return method(name, 1, 1, func(r *renderer, line int, args []any, _ *Dict) (any, error) {
			items, err := r.iterate(line, args[0])
			if err != nil {
				return nil, err
			}
			parts := make([]string, len(items))
			for i, it := range items {
				if parts[i], err = argString(r, line, "join", it); err != nil {
					return nil, err
				}
			}
			if err := r.checkJoined(line, parts, s); err != nil {
				return nil, err
			}
			return strings.Join(parts, s), nil
		})
	case "isdigit", "isalpha", "isspace", "isupper", "islower":
		return method(name, 0, 0, func(*renderer, int, []any, *Dict) (any, error) { return pyIsClass(s, name), nil })
	}
	return nil
}

// maxRange is the most numbers range() makes, as Jinja's sandbox.
const maxRange = 100_000

func pyIsClass(s, class string) bool {
	if s == "" {
		return false
	}
	cased := false
	for _, r := range s {
		switch class {
		case "isdigit":
			if !unicode.IsDigit(r) {
				return false
			}
		case "isalpha":
			if !unicode.IsLetter(r) {
				return false
			}
		case "isspace":
			if !pyIsSpace(r) {
				return false
			}
		case "isupper":
			if unicode.IsLower(r) {
				return false
			}
			cased = cased || unicode.IsUpper(r)
		case "islower":
			if unicode.IsUpper(r) {
				return false
			}
			cased = cased || unicode.IsLower(r)
		}
	}
	return cased || class != "isupper" && class != "islower"
}

func pySplit(r *renderer, line int, s string, sep any, maxSplit int64, fromRight bool) (any, error) {
	// Charge the most parts there can be, each a string in a slot, before
	// making them.
	most := int64(1)
	switch sp := sep.(type) {
	case nil:
		for _, c := range s {
			if pyIsSpace(c) {
				most++
			}
		}
	case string:
		if sp != "" {
			most += int64(strings.Count(s, sp))
		}
	}
	if maxSplit >= 0 {
		most = min(most, maxSplit+1)
	}
	if err := r.allocItems(line, 2*most); err != nil {
		return nil, err
	}
	var parts []string
	switch sp := sep.(type) {
	case nil:
		fields := strings.FieldsFunc(s, pyIsSpace)
		if maxSplit >= 0 && int64(len(fields)) > maxSplit+1 {
			// Keep the remainder as written, from the first unsplit field.
			if fromRight {
				rest := strings.TrimRightFunc(s, pyIsSpace)
				for range maxSplit {
					i := strings.LastIndexFunc(rest, pyIsSpace)
					parts = append([]string{rest[i+1:]}, parts...)
					rest = strings.TrimRightFunc(rest[:i], pyIsSpace)
				}
				parts = append([]string{rest}, parts...)
			} else {
				rest := strings.TrimLeftFunc(s, pyIsSpace)
				for range maxSplit {
					i := strings.IndexFunc(rest, pyIsSpace)
					parts = append(parts, rest[:i])
					rest = strings.TrimLeftFunc(rest[i:], pyIsSpace)
				}
				parts = append(parts, rest)
			}
		} else {
			parts = fields
		}
	case string:
		if sp == "" {
			return nil, r.errorf(line, "empty separator")
		}
		switch {
		case maxSplit < 0:
			parts = strings.Split(s, sp)
		case fromRight:
			rest := s
			for range maxSplit {
				i := strings.LastIndex(rest, sp)
				if i < 0 {
					break
				}
				parts = append([]string{rest[i+len(sp):]}, parts...)
				rest = rest[:i]
			}
			parts = append([]string{rest}, parts...)
		default:
			parts = strings.SplitN(s, sp, int(min(maxSplit, math.MaxInt32-1))+1)
		}
	default:
		return nil, r.errorf(line, "split() separator must be a string or None, not %s", r.describeValue(sep))
	}
	out := make([]any, len(parts))
	for i, p := range parts {
		out[i] = p
	}
	return out, nil
}

func pyReplace(r *renderer, line int, s string, args []any) (any, error) {
	old, err := argString(r, line, "replace", args[0])
	if err != nil {
		return nil, err
	}
	repl, err := argString(r, line, "replace", args[1])
	if err != nil {
		return nil, err
	}
	n := -1
	if len(args) == 3 && args[2] != nil {
		c, ok := asIndex(args[2])
		if !ok {
			return nil, r.errorf(line, "replace() count must be an integer")
		}
		if c >= 0 {
			n = int(min(c, math.MaxInt32))
		}
	}
	count := strings.Count(s, old)
	if old == "" {
		count = runeLen(s) + 1
	}
	if n >= 0 {
		count = min(count, n)
	}
	if err := r.checkSize(line, len(s)+count*(len(repl)-len(old))); err != nil {
		return nil, err
	}
	return strings.Replace(s, old, repl, n), nil
}

// pyUpper and pyLower are Python's str.upper and str.lower: full case
// mappings, where a character may become several ("ß" → "SS", "ﬁ" →
// "FI", "İ" → "i̇"), unlike Go's strings.ToUpper.
func pyUpper(s string) string { return cases.Upper(language.Und).String(s) }
func pyLower(s string) string { return cases.Lower(language.Und).String(s) }

// pyTitleCase is the title case of one character, in full ("ß" → "Ss").
func pyTitleCase(r rune) string {
	return cases.Title(language.Und, cases.NoLower).String(string(r))
}

// pyTitle is Python's str.title: a letter after a letter lowered, any
// other in title case.
func pyTitle(s string) string {
	// One caser of each kind for the whole string: making one a
	// character made title() twenty times slower.
	title, lower := cases.Title(language.Und, cases.NoLower), cases.Lower(language.Und)
	var b strings.Builder
	prevCased := false
	for _, r := range s {
		switch {
		case unicode.IsLetter(r):
			if r < utf8.RuneSelf {
				if prevCased {
					b.WriteRune(unicode.ToLower(r))
				} else {
					b.WriteRune(unicode.ToUpper(r))
				}
			} else if prevCased {
				b.WriteString(lower.String(string(r)))
			} else {
				b.WriteString(title.String(string(r)))
			}
			prevCased = true
		default:
			b.WriteRune(r)
			prevCased = false
		}
	}
	return b.String()
}

// jinjaTitle is Jinja's title filter, which is not str.title: the text
// is cut before and after runs of spaces, "-", "(", "{", "[" and "<", and
// each piece's first character is upper-cased and the rest lowered
// ("o'neil mc-d" → "O'neil Mc-D").
func jinjaTitle(s string) string {
	isCut := func(r rune) bool { return unicode.IsSpace(r) || strings.ContainsRune("-({[<", r) }
	upper, lower := cases.Upper(language.Und), cases.Lower(language.Und) // once, not a piece
	var b strings.Builder
	for len(s) > 0 {
		r, _ := utf8.DecodeRuneInString(s)
		cut := isCut(r)
		end := strings.IndexFunc(s, func(r rune) bool { return isCut(r) != cut })
		if end < 0 {
			end = len(s)
		}
		piece := s[:end]
		s = s[end:]
		first, n := utf8.DecodeRuneInString(piece)
		if first < utf8.RuneSelf {
			b.WriteByte(byte(unicode.ToUpper(first)))
		} else {
			b.WriteString(upper.String(piece[:n]))
		}
		if rest := piece[n:]; isASCII(rest) {
			for i := range len(rest) {
				b.WriteByte(byte(unicode.ToLower(rune(rest[i]))))
			}
		} else {
			b.WriteString(lower.String(rest))
		}
	}
	return b.String()
}

// isASCII reports whether s has only ASCII characters, whose case maps
// one to one (the casers' work, and their allocations, are for the rest).
func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// pyCapitalize is Python's str.capitalize: the first character in title
// case, the rest lowered.
func pyCapitalize(s string) string {
	if s == "" {
		return s
	}
	r, n := utf8.DecodeRuneInString(s)
	return pyTitleCase(r) + pyLower(s[n:])
}

// kwarg returns keyword argument name, or positional argument i (args
// after the filtered value), or def.
func kwarg(args []any, kwargs *Dict, i int, name string, def any) any {
	if kwargs != nil {
		if v, ok := kwargs.Get(name); ok {
			return v
		}
	}
	if i < len(args) {
		return args[i]
	}
	return def
}

func (r *renderer) applyFilter(f *filterExpr, v any, s *scope) (any, error) {
	args, err := r.evalList(f.args, s)
	if err != nil {
		return nil, err
	}
	kwargs := NewDict()
	for _, kw := range f.kwargs {
		kv, err := r.eval(kw.value, s)
		if err != nil {
			return nil, err
		}
		kwargs.Set(kw.name, kv)
	}
	return r.filter(f.line, f.name, v, args, kwargs)
}

// filter applies the named filter to v.
func (r *renderer) filter(line int, name string, v any, args []any, kwargs *Dict) (any, error) {
	if s, ok := v.(string); ok {
		if err := r.scan(line, len(s)); err != nil {
			return nil, err
		}
	}
	str := func() (string, error) { return r.str(line, v) }
	switch name {
	case "trim":
		s, err := str()
		if err != nil {
			return nil, err
		}
		return stripChars(r, line, s, []any{kwarg(args, kwargs, 0, "chars", nil)}, true, true)
	case "upper":
		s, err := str()
		if err != nil {
			return nil, err
		}
		return pyUpper(s), nil
	case "lower":
		s, err := str()
		if err != nil {
			return nil, err
		}
		return pyLower(s), nil
	case "capitalize":
		s, err := str()
		if err != nil {
			return nil, err
		}
		return pyCapitalize(s), nil
	case "title":
		s, err := str()
		if err != nil {
			return nil, err
		}
		return jinjaTitle(s), nil
	case "string":
		s, err := str()
		if err != nil {
			return nil, err
		}
		return s, nil
	case "safe", "e", "escape":
		if name == "safe" {
			return v, nil
		}
		s, err := str()
		if err != nil {
			return nil, err
		}
		return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;").Replace(s), nil
	case "replace":
		s, err := str()
		if err != nil {
			return nil, err
		}
		if len(args) < 2 {
			return nil, r.errorf(line, "replace takes an old and a new string")
		}
		return pyReplace(r, line, s, args)
	case "length", "count":
		switch v := v.(type) {
		case string:
			return int64(runeLen(v)), nil
		case []any:
			return int64(len(v)), nil
		case *Dict:
			return int64(v.Len()), nil
		case Undefined:
			return int64(0), nil
		}
		return nil, r.errorf(line, "object of type '%s' has no len()", typeName(v))
	case "first", "last":
		items, err := r.iterate(line, v)
		if err != nil {
			return nil, err
		}
		if len(items) == 0 {
			return Undefined{Name: name + " of an empty sequence"}, nil
		}
		if name == "first" {
			return items[0], nil
		}
		return items[len(items)-1], nil
	case "list":
		items, err := r.iterate(line, v)
		if err != nil {
			return nil, err
		}
		return append([]any{}, items...), nil
	case "reverse":
		if s, ok := v.(string); ok {
			runes := []rune(s)
			slices.Reverse(runes)
			return string(runes), nil
		}
		items, err := r.iterate(line, v)
		if err != nil {
			return nil, err
		}
		out := slices.Clone(items)
		slices.Reverse(out)
		return out, nil
	case "join":
		items, err := r.iterate(line, v)
		if err != nil {
			return nil, err
		}
		sep, err := r.str(line, kwarg(args, kwargs, 0, "d", ""))
		if err != nil {
			return nil, err
		}
		attr := kwarg(args, kwargs, 1, "attribute", nil)
		parts := make([]string, len(items))
		for i, it := range items {
			if attr != nil {
				if it, err = r.attribute(line, it, attr); err != nil {
					return nil, err
				}
			}
			if parts[i], err = r.str(line, it); err != nil {
				return nil, err
			}
		}
		if err := r.checkJoined(line, parts, sep); err != nil {
			return nil, err
		}
		return strings.Join(parts, sep), nil
	case "default", "d":
		def := kwarg(args, kwargs, 0, "default_value", "")
		boolean := truthy(kwarg(args, kwargs, 1, "boolean", false))
		if _, undef := v.(Undefined); undef || boolean && !truthy(v) {
			return def, nil
		}
		return v, nil
	case "items":
		switch d := v.(type) {
		case *Dict:
			return dictItems(d), nil
		case Undefined:
			return []any{}, nil
		}
		return nil, r.errorf(line, "items filter needs a mapping, not %s", r.describeValue(v))
	case "dictsort":
		d, ok := v.(*Dict)
		if !ok {
			return nil, r.errorf(line, "dictsort needs a mapping, not %s", r.describeValue(v))
		}
		items := dictItems(d)
		slices.SortStableFunc(items, func(a, b any) int {
			return strings.Compare(strings.ToLower(a.([]any)[0].(string)), strings.ToLower(b.([]any)[0].(string)))
		})
		return items, nil
	case "tojson":
		return r.toJSON(line, v, args, kwargs)
	case "int":
		switch x := v.(type) {
		case int64:
			return x, nil
		case bool:
			return boolInt(x), nil
		case float64:
			if math.IsNaN(x) || math.IsInf(x, 0) || math.Abs(x) >= 1<<63 {
				return kwarg(args, kwargs, 0, "default", int64(0)), nil
			}
			return int64(x), nil
		case string:
			if i, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64); err == nil {
				return i, nil
			}
			if f, err := strconv.ParseFloat(strings.TrimSpace(x), 64); err == nil && math.Abs(f) < 1<<63 {
				return int64(f), nil
			}
		}
		return kwarg(args, kwargs, 0, "default", int64(0)), nil
	case "float":
		switch x := v.(type) {
		case int64:
			return float64(x), nil
		case float64:
			return x, nil
		case bool:
			return float64(boolInt(x)), nil
		case string:
			if f, err := strconv.ParseFloat(strings.TrimSpace(x), 64); err == nil {
				return f, nil
			}
		}
		return kwarg(args, kwargs, 0, "default", 0.0), nil
	case "abs":
		switch x := v.(type) {
		case int64:
			if x < 0 {
				return r.arith(line, "-", int64(0), x)
			}
			return x, nil
		case float64:
			return math.Abs(x), nil
		}
		return nil, r.errorf(line, "bad operand type for abs(): %s", r.describeValue(v))
	case "sort", "min", "max":
		// sort(reverse=false, case_sensitive=false, attribute=none),
		// min/max(case_sensitive=false, attribute=none).
		items, err := r.iterate(line, v)
		if err != nil {
			return nil, err
		}
		off := 0
		reverse := false
		if name == "sort" {
			reverse, off = truthy(kwarg(args, kwargs, 0, "reverse", false)), 1
		}
		keys, err := r.sortKeys(line, items, truthy(kwarg(args, kwargs, off, "case_sensitive", false)), kwarg(args, kwargs, off+1, "attribute", nil), name == "sort")
		if err != nil {
			return nil, err
		}
		order := make([]int, len(items))
		for i := range order {
			order[i] = i
		}
		var cmpErr error
		slices.SortStableFunc(order, func(a, b int) int {
			c, err := r.order(line, "<", keys[a], keys[b])
			if cmpErr == nil {
				cmpErr = err
			}
			if reverse {
				c = -c
			}
			return c
		})
		if cmpErr != nil {
			return nil, cmpErr
		}
		switch {
		case name != "sort" && len(items) == 0:
			return Undefined{Name: name + "() of an empty sequence"}, nil
		case name == "min":
			return items[order[0]], nil
		case name == "max":
			// Python's max keeps the first of equal largest items.
			last := order[len(order)-1]
			for i := len(order) - 2; i >= 0; i-- {
				if c, _ := r.order(line, "<", keys[order[i]], keys[last]); c != 0 {
					break
				}
				last = order[i]
			}
			return items[last], nil
		}
		out := make([]any, len(items))
		for i, j := range order {
			out[i] = items[j]
		}
		return out, nil
	case "round":
		// round(precision=0, method='common'): Python's round (to even,
		// on the exact binary value) or Jinja's ceil and floor of
		// value·10^precision; a float comes back (an int stays an int
		// under 'common').
		pv := kwarg(args, kwargs, 0, "precision", int64(0))
		p, ok := pv.(int64)
		if !ok {
			return nil, r.errorf(line, "round's precision must be an integer, not %s", r.describeValue(pv))
		}
		method := kwarg(args, kwargs, 1, "method", "common")
		if method != "common" && method != "ceil" && method != "floor" {
			return nil, r.errorf(line, "round's method must be 'common', 'ceil' or 'floor', not '%s'", shortStr(method))
		}
		if b, ok := v.(bool); ok {
			v = boolInt(b)
		}
		var x float64
		switch n := v.(type) {
		case int64:
			if method == "common" {
				return roundInt(n, p), nil
			}
			x = float64(n)
		case float64:
			x = n
		default:
			return nil, r.errorf(line, "round needs a number, not %s", r.describeValue(v))
		}
		if method == "common" && p > 400 {
			return x, nil // finer than any float's digits
		}
		p = max(-400, min(p, 400))
		scale := math.Pow(10, float64(p))
		switch method {
		case "common":
			if p >= 0 {
				rounded, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', int(p), 64), 64)
				return rounded, nil
			}
			return math.RoundToEven(x*scale) / scale, nil
		case "ceil":
			return math.Ceil(x*scale) / scale, nil
		}
		return math.Floor(x*scale) / scale, nil
	case "sum":
		items, err := r.iterate(line, v)
		if err != nil {
			return nil, err
		}
		attr := kwarg(args, kwargs, 0, "attribute", nil)
		total := kwarg(args, kwargs, 1, "start", int64(0))
		for _, it := range append([]any{total}, items...) {
			if _, ok := it.(string); ok {
				return nil, r.errorf(line, "sum cannot add strings (join them)")
			}
		}
		for _, it := range items {
			if attr != nil {
				if it, err = r.attribute(line, it, attr); err != nil {
					return nil, err
				}
			}
			if _, ok := it.(string); ok {
				return nil, r.errorf(line, "sum cannot add strings (join them)")
			}
			if total, err = r.arith(line, "+", total, it); err != nil {
				return nil, err
			}
		}
		return total, nil
	case "unique":
		items, err := r.iterate(line, v)
		if err != nil {
			return nil, err
		}
		var out []any
		for _, it := range items {
			seen := false
			for _, x := range out {
				if seen, err = r.equal(line, x, it); seen || err != nil {
					break
				}
			}
			if err != nil {
				return nil, err
			}
			if !seen {
				out = append(out, it)
			}
		}
		return out, nil
	case "map":
		return r.mapFilter(line, v, args, kwargs)
	case "select", "reject", "selectattr", "rejectattr":
		return r.selectFilter(line, name, v, args)
	case "indent":
		s, err := str()
		if err != nil {
			return nil, err
		}
		width := kwarg(args, kwargs, 0, "width", int64(4))
		pad, ok := width.(string)
		if !ok {
			n, _ := asIndex(width)
			pad = strings.Repeat(" ", int(max(0, min(n, 1024))))
		}
		first := truthy(kwarg(args, kwargs, 1, "first", false))
		blank := truthy(kwarg(args, kwargs, 2, "blank", false))
		lines := strings.Split(s, "\n")
		indented := func(i int, l string) bool { return (i > 0 || first) && (blank || i == 0 || strings.TrimSpace(l) != "") }
		// The size first: a long pad on many lines is gigabytes.
		size := int64(len(s))
		for i, l := range lines {
			if indented(i, l) {
				size += int64(len(pad))
			}
		}
		if err := r.checkSize64(line, size); err != nil {
			return nil, err
		}
		for i, l := range lines {
			if indented(i, l) {
				lines[i] = pad + l
			}
		}
		return strings.Join(lines, "\n"), nil
	case "wordcount":
		s, err := str()
		if err != nil {
			return nil, err
		}
		return int64(len(strings.Fields(s))), nil
	}
	return nil, r.errorf(line, "unknown filter %q", name)
}

// roundInt is Python's round(n, p) of an integer: n itself for p ≥ 0,
// else to the nearest multiple of 10^-p, halves to the even multiple.
func roundInt(n, p int64) int64 {
	if p >= 0 {
		return n
	}
	if p < -18 {
		return 0 // |n| < 10^19 rounds to 0 at 10^19 and beyond
	}
	q := int64(1)
	for range -p {
		q *= 10
	}
	d, m := n/q, n%q
	if m < 0 { // floor division, as Python's
		d, m = d-1, m+q
	}
	if 2*m > q || 2*m == q && d%2 != 0 {
		d++
	}
	return d * q
}

// sortKeys are the keys sort, min and max compare items by: the item or
// its attribute (a path; for sort, several separated by commas, compared
// in turn), strings lowered unless caseSensitive, as Jinja's filters do.
func (r *renderer) sortKeys(line int, items []any, caseSensitive bool, attr any, several bool) ([]any, error) {
	var paths []any
	if s, ok := attr.(string); ok && several {
		for _, p := range strings.Split(s, ",") {
			paths = append(paths, strings.TrimSpace(p))
		}
	} else if attr != nil {
		paths = []any{attr}
	}
	fold := func(v any) any {
		if s, ok := v.(string); ok && !caseSensitive {
			return pyLower(s)
		}
		return v
	}
	keys := make([]any, len(items))
	for i, it := range items {
		if err := r.step(line); err != nil {
			return nil, err
		}
		if len(paths) == 0 {
			keys[i] = fold(it)
			continue
		}
		var key []any
		for _, p := range paths {
			v, err := r.attribute(line, it, p)
			if err != nil {
				return nil, err
			}
			key = append(key, fold(v))
		}
		keys[i] = key[0]
		if len(key) > 1 {
			keys[i] = key
		}
	}
	return keys, nil
}

// attribute reads an attribute path ("a.b") of v, as map and selectattr
// do: items of dicts.
func (r *renderer) attribute(line int, v any, attr any) (any, error) {
	path, ok := attr.(string)
	if !ok {
		return r.getItem(line, v, attr)
	}
	for _, part := range strings.Split(path, ".") {
		if _, undef := v.(Undefined); undef {
			return v, nil
		}
		var err error
		if i, err2 := strconv.ParseInt(part, 10, 64); err2 == nil {
			v, err = r.getItem(line, v, i)
		} else {
			v, err = r.getItem(line, v, part)
		}
		if err != nil {
			return nil, err
		}
	}
	return v, nil
}

func (r *renderer) mapFilter(line int, v any, args []any, kwargs *Dict) (any, error) {
	items, err := r.iterate(line, v)
	if err != nil {
		return nil, err
	}
	out := make([]any, 0, len(items))
	if attr, ok := kwargs.Get("attribute"); ok {
		def, hasDef := kwargs.Get("default")
		for _, it := range items {
			x, err := r.attribute(line, it, attr)
			if err != nil {
				return nil, err
			}
			if _, undef := x.(Undefined); undef && hasDef {
				x = def
			}
			out = append(out, x)
		}
		return out, nil
	}
	if len(args) == 0 {
		return nil, r.errorf(line, "map needs a filter name or attribute=")
	}
	fname, ok := args[0].(string)
	if !ok {
		return nil, r.errorf(line, "map's filter name must be a string")
	}
	for _, it := range items {
		x, err := r.filter(line, fname, it, args[1:], kwargs)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, nil
}

func (r *renderer) selectFilter(line int, name string, v any, args []any) (any, error) {
	items, err := r.iterate(line, v)
	if err != nil {
		return nil, err
	}
	byAttr := strings.HasSuffix(name, "attr")
	keep := strings.HasPrefix(name, "select")
	var attr any
	if byAttr {
		if len(args) == 0 {
			return nil, r.errorf(line, "%s needs an attribute name", name)
		}
		attr, args = args[0], args[1:]
	}
	var out []any
	for _, it := range items {
		x := it
		if byAttr {
			if x, err = r.attribute(line, it, attr); err != nil {
				return nil, err
			}
		}
		var ok bool
		if len(args) == 0 {
			ok = truthy(x)
		} else {
			test, isStr := args[0].(string)
			if !isStr {
				return nil, r.errorf(line, "%s's test name must be a string", name)
			}
			if ok, err = r.applyTest(line, test, x, args[1:]); err != nil {
				return nil, err
			}
		}
		if ok == keep {
			out = append(out, it)
		}
	}
	if out == nil {
		out = []any{}
	}
	return out, nil
}

// toJSON is Hugging Face's tojson filter: json.dumps(v,
// ensure_ascii=False, indent=indent, separators=separators,
// sort_keys=sort_keys).
func (r *renderer) toJSON(line int, v any, args []any, kwargs *Dict) (any, error) {
	o := &jsonOptions{itemSep: ", ", keySep: ": ", maxBytes: r.t.limits.MaxOutputBytes}
	switch ind := kwarg(args, kwargs, 0, "indent", nil).(type) {
	case nil:
	case int64:
		o.hasIndent, o.indent = true, strings.Repeat(" ", int(max(0, min(ind, 64))))
		o.itemSep = ","
	case string:
		o.hasIndent, o.indent = true, ind
		o.itemSep = ","
	default:
		return nil, r.errorf(line, "tojson's indent must be an integer or a string")
	}
	if seps := kwarg(args, kwargs, 99, "separators", nil); seps != nil {
		pair, ok := seps.([]any)
		if !ok || len(pair) != 2 {
			return nil, r.errorf(line, "tojson's separators must be a pair of strings")
		}
		item, ok1 := pair[0].(string)
		key, ok2 := pair[1].(string)
		if !ok1 || !ok2 {
			return nil, r.errorf(line, "tojson's separators must be a pair of strings")
		}
		o.itemSep, o.keySep = item, key
	}
	o.sortKeys = truthy(kwarg(args, kwargs, 99, "sort_keys", false))
	o.ensureASCII = truthy(kwarg(args, kwargs, 99, "ensure_ascii", false))
	var b strings.Builder
	if err := writeJSON(&b, v, o, 0); err != nil {
		if err == errJSONTooLarge {
			return nil, r.checkSize(line, b.Len())
		}
		return nil, r.errorf(line, "tojson: %v", err)
	}
	return b.String(), r.checkSize(line, b.Len())
}

// applyTest applies the named test ("x is name(args)").
func (r *renderer) applyTest(line int, name string, v any, args []any) (bool, error) {
	arg := func() (any, error) {
		if len(args) == 0 {
			return nil, r.errorf(line, "test %q needs an argument", name)
		}
		return args[0], nil
	}
	switch name {
	case "defined":
		_, undef := v.(Undefined)
		return !undef, nil
	case "undefined":
		_, undef := v.(Undefined)
		return undef, nil
	case "none":
		return v == nil, nil
	case "boolean":
		_, ok := v.(bool)
		return ok, nil
	case "true":
		b, ok := v.(bool)
		return ok && b, nil
	case "false":
		b, ok := v.(bool)
		return ok && !b, nil
	case "string":
		_, ok := v.(string)
		return ok, nil
	case "number":
		switch v.(type) {
		case int64, float64, bool:
			return true, nil
		}
		return false, nil
	case "integer":
		_, ok := v.(int64)
		return ok, nil
	case "float":
		_, ok := v.(float64)
		return ok, nil
	case "mapping":
		_, ok := v.(*Dict)
		return ok, nil
	case "iterable":
		switch v.(type) {
		case string, []any, *Dict, Undefined:
			return true, nil
		}
		return false, nil
	case "sequence":
		switch v.(type) {
		case string, []any, *Dict:
			return true, nil
		}
		return false, nil
	case "callable":
		switch v.(type) {
		case *function, *macro:
			return true, nil
		}
		return false, nil
	case "lower", "upper":
		s, ok := v.(string)
		return ok && pyIsClass(s, "is"+name), nil
	case "odd", "even", "divisibleby":
		n, ok := asIndex(v)
		if !ok {
			return false, r.errorf(line, "test %q needs an integer, not %s", name, r.describeValue(v))
		}
		switch name {
		case "odd":
			return n%2 != 0, nil
		case "even":
			return n%2 == 0, nil
		}
		a, err := arg()
		if err != nil {
			return false, err
		}
		d, ok := asIndex(a)
		if !ok || d == 0 {
			return false, r.errorf(line, "divisibleby needs a non-zero integer")
		}
		return n%d == 0, nil
	case "equalto", "eq", "==", "sameas":
		a, err := arg()
		if err != nil {
			return false, err
		}
		if name == "sameas" {
			switch a.(type) {
			case nil, bool:
				eq, err := r.equal(line, v, a)
				return eq && typeName(v) == typeName(a), err
			}
		}
		return r.equal(line, v, a)
	case "ne", "!=":
		a, err := arg()
		if err != nil {
			return false, err
		}
		eq, err := r.equal(line, v, a)
		return !eq, err
	case "lt", "<", "le", "<=", "gt", ">", "ge", ">=", "greaterthan", "lessthan":
		a, err := arg()
		if err != nil {
			return false, err
		}
		op := map[string]string{"lt": "<", "lessthan": "<", "le": "<=", "gt": ">", "greaterthan": ">", "ge": ">="}[name]
		if op == "" {
			op = name
		}
		return r.compare(line, op, v, a)
	case "in":
		a, err := arg()
		if err != nil {
			return false, err
		}
		return r.contains(line, a, v)
	}
	return false, r.errorf(line, "unknown test %q", name)
}
