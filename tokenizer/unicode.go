package tokenizer

import (
	"strings"
	"unicode"
)

// Character classes as the reference implementations define them. The
// tables are Go's (Unicode 15.0); characters assigned in later Unicode
// versions count as unassigned here.

// isWhitespace is Unicode's White_Space property (Rust's char::is_whitespace,
// Oniguruma's \s).
func isWhitespace(r rune) bool { return unicode.IsSpace(r) }

// isAlphabetic is Unicode's derived Alphabetic property.
func isAlphabetic(r rune) bool {
	return unicode.IsLetter(r) || unicode.Is(unicode.Nl, r) || unicode.Is(unicode.Other_Alphabetic, r)
}

func isLowercase(r rune) bool {
	return unicode.Is(unicode.Ll, r) || unicode.Is(unicode.Other_Lowercase, r)
}

func isUppercase(r rune) bool {
	return unicode.Is(unicode.Lu, r) || unicode.Is(unicode.Other_Uppercase, r)
}

// isWordChar is the Unicode \w of Rust's regex crate: Alphabetic, marks,
// decimal digits, connector punctuation and the joiners.
func isWordChar(r rune) bool {
	if r < 0x80 {
		return r == '_' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'
	}
	return isAlphabetic(r) || unicode.IsMark(r) || unicode.Is(unicode.Nd, r) ||
		unicode.Is(unicode.Pc, r) || unicode.Is(unicode.Join_Control, r)
}

// isOnigWordChar is Oniguruma's \w in Unicode mode: Alphabetic, marks,
// decimal digits, connector punctuation, and the Latin-1 digits ² ³ ¹ and
// fractions ¼ ½ ¾ its ctype table also counts as word characters.
func isOnigWordChar(r rune) bool {
	switch r {
	case 0xB2, 0xB3, 0xB9, 0xBC, 0xBD, 0xBE:
		return true
	}
	if r < 0x80 {
		return isWordChar(r)
	}
	return isAlphabetic(r) || unicode.IsMark(r) || unicode.Is(unicode.Nd, r) || unicode.Is(unicode.Pc, r)
}

// isAssigned reports whether r has a general category other than Cn.
func isAssigned(r rune) bool {
	return unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z, unicode.C)
}

// isOther is the general category C including unassigned code points
// (Cc, Cf, Cn, Co, Cs), BERT's notion of a control character.
func isOther(r rune) bool {
	return unicode.Is(unicode.C, r) || !isAssigned(r)
}

// isPunctuation is BERT's punctuation: ASCII punctuation or Unicode 9.0's
// P*, as in the Rust library.
func isPunctuation(r rune) bool {
	if r < 0x80 {
		return '!' <= r && r <= '/' || ':' <= r && r <= '@' || '[' <= r && r <= '`' || '{' <= r && r <= '~'
	}
	return unicode.Is(punctuation9, r)
}

// isNumeric is Rust's char::is_numeric: the general categories Nd, Nl, No.
func isNumeric(r rune) bool { return unicode.IsNumber(r) }

// lowerRune appends the full lowercase mapping of r, as Rust's
// char::to_lowercase: the simple mapping, except that U+0130 (İ) lowers to
// "i̇" (i and a combining dot above).
func appendLower(b *strings.Builder, r rune) {
	if r == 0x130 {
		b.WriteString("i\u0307")
		return
	}
	b.WriteRune(unicode.ToLower(r))
}

// propertyTable returns a predicate for a Unicode property, general
// category or script named as Oniguruma accepts it (case, spaces, hyphens
// and underscores ignored), or nil.
func propertyPredicate(name string) func(rune) bool {
	key := canonicalPropertyName(name)
	if f, ok := derivedProperties[key]; ok {
		return f
	}
	if t, ok := propertyIndex[key]; ok {
		return func(r rune) bool { return unicode.Is(t, r) }
	}
	return nil
}

func canonicalPropertyName(name string) string {
	var b strings.Builder
	for _, r := range name {
		switch r {
		case ' ', '_', '-':
			continue
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

var derivedProperties = map[string]func(rune) bool{
	"alphabetic": isAlphabetic,
	"alpha":      isAlphabetic,
	"whitespace": isWhitespace,
	"space":      isWhitespace,
	"lowercase":  isLowercase,
	"lower":      isLowercase,
	"uppercase":  isUppercase,
	"upper":      isUppercase,
	"word":       isOnigWordChar,
	"alnum":      func(r rune) bool { return isAlphabetic(r) || unicode.Is(unicode.Nd, r) },
	"digit":      func(r rune) bool { return unicode.Is(unicode.Nd, r) },
	"punct":      func(r rune) bool { return unicode.IsPunct(r) || unicode.IsSymbol(r) },
	"cntrl":      func(r rune) bool { return unicode.Is(unicode.Cc, r) },
	"blank":      func(r rune) bool { return r == '\t' || unicode.Is(unicode.Zs, r) },
	"xdigit":     isHexDigit,
	"ascii":      func(r rune) bool { return r < 0x80 },
	"any":        func(rune) bool { return true },
	"assigned":   isAssigned,
	"c":          isOther,
	"other":      isOther,
	"cn":         func(r rune) bool { return !isAssigned(r) },
	"unassigned": func(r rune) bool { return !isAssigned(r) },
	"lc":         func(r rune) bool { return unicode.In(r, unicode.Lu, unicode.Ll, unicode.Lt) },
	"l&":         func(r rune) bool { return unicode.In(r, unicode.Lu, unicode.Ll, unicode.Lt) },
	"casedletter": func(r rune) bool {
		return unicode.In(r, unicode.Lu, unicode.Ll, unicode.Lt)
	},
	"graph": func(r rune) bool { return unicode.IsGraphic(r) && !isWhitespace(r) },
	"print": unicode.IsPrint,
}

func isHexDigit(r rune) bool {
	return '0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F'
}

// propertyIndex maps canonical names of general categories (short and
// long), scripts and binary properties to Go's tables.
var propertyIndex = func() map[string]*unicode.RangeTable {
	m := map[string]*unicode.RangeTable{}
	for name, t := range unicode.Properties {
		m[canonicalPropertyName(name)] = t
	}
	for name, t := range unicode.Scripts {
		m[canonicalPropertyName(name)] = t
	}
	for name, t := range unicode.Categories {
		m[canonicalPropertyName(name)] = t
	}
	for alias, name := range unicode.CategoryAliases {
		if t, ok := unicode.Categories[name]; ok {
			m[canonicalPropertyName(alias)] = t
		}
	}
	return m
}()

//go:generate node gen_unicode9.mjs
