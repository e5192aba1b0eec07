package tokenizer

import (
	"math/rand"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// randomPattern builds a pattern from the syntax whose meaning Go's regexp
// shares with Oniguruma (literals, classes with ranges and Unicode
// properties, alternation, groups, greedy and lazy quantifiers of what
// cannot match empty, (?i)).
func randomPattern(r *rand.Rand, depth int) string {
	atoms := []string{"a", "b", "c", "ab", " ", "'", "x", "é", "日", ".", "[ab]", "[^a ]", "[a-c]",
		`\p{L}`, `\p{N}`, `\p{Lu}`, `[^\p{L}\p{N} ]`, "[0-9]", `\.`, "[é日]", "[^ab]+", "k", "s"}
	if depth > 2 || r.Intn(3) == 0 {
		return atoms[r.Intn(len(atoms))]
	}
	switch r.Intn(6) {
	case 0:
		return randomPattern(r, depth+1) + randomPattern(r, depth+1)
	case 1:
		return "(?:" + randomPattern(r, depth+1) + "|" + randomPattern(r, depth+1) + ")"
	case 2:
		// Loops over what can match empty stop differently: Oniguruma leaves
		// the loop after an empty turn, Go's regexp backtracks into it.
		sub := randomPattern(r, depth+1)
		if n, err := parseRegex(sub); err != nil || canBeEmpty(n) {
			return sub
		}
		q := []string{"*", "+", "?", "{1,3}", "{2}", "*?", "+?", "??", "{0,2}?"}[r.Intn(9)]
		return "(?:" + sub + ")" + q
	case 3:
		return "(?i:" + randomPattern(r, depth+1) + ")"
	case 4:
		return randomPattern(r, depth+1) + "|" + randomPattern(r, depth+1)
	}
	return "(" + randomPattern(r, depth+1) + ")"
}

// TestRegexMatchesGoRegexp compares leftmost-first matching with Go's
// regexp on random patterns and texts of the shared syntax.
func TestRegexMatchesGoRegexp(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	alphabet := []string{"a", "b", "c", "A", "B", " ", "'", "x", "é", "É", "日", "1", "2", ".", "\n", "ſ", "K"}
	for i := 0; i < 6000; i++ {
		pat := randomPattern(r, 0)
		want, err := regexp.Compile(pat)
		if err != nil {
			t.Fatalf("Go rejects %q: %v", pat, err)
		}
		got, err := compileRegex(pat)
		if err != nil {
			t.Fatalf("%q: %v", pat, err)
		}
		for j := 0; j < 10; j++ {
			var b strings.Builder
			for n := r.Intn(12); n > 0; n-- {
				b.WriteString(alphabet[r.Intn(len(alphabet))])
			}
			s := b.String()
			var matches [][]int
			got.findAll(s, func(start, end int) { matches = append(matches, []int{start, end}) })
			expected := want.FindAllStringIndex(s, -1)
			if !slices.EqualFunc(matches, expected, slices.Equal) {
				t.Fatalf("pattern %q on %q: got %v, Go's regexp %v", pat, s, matches, expected)
			}
		}
	}
}

// TestRegexOniguruma checks what Oniguruma means where Go's regexp would
// differ: look-around, Unicode \s \d \w, line anchors, possessive and
// atomic groups, class intersection, Ruby's {n}+.
func TestRegexOniguruma(t *testing.T) {
	cases := []struct {
		pat, s string
		want   []string
	}{
		{`\s+(?!\S)|\s+`, "a   b  ", []string{"  ", " ", "  "}},
		{`\s+`, "a\u00a0\u3000\u0085b\ufeffc", []string{"\u00a0\u3000\u0085"}},
		{`\d+`, "12٣४x", []string{"12٣४"}},
		{`\w+`, "né_²x-y", []string{"né_²x", "y"}},
		{`^a|a$`, "a\na", []string{"a", "a"}},
		{`(?<=a)b`, "abcb", []string{"b"}},
		{`(?<!a)b`, "abcb", []string{"b"}},
		{`a++a`, "aaa", nil},
		{`(?>a+)b`, "aab", []string{"aab"}},
		{`[a-z&&[^aeiou]]+`, "hello", []string{"h", "ll"}},
		{`(?i:'s|'t)`, "'S 'T 's", []string{"'S", "'T", "'s"}},
		{`a{2}+`, "aaaaa", []string{"aaaa"}},
		{`\p{L}+|\p{N}{1,3}`, "ab12345", []string{"ab", "123", "45"}},
		{`[^\r\n\p{L}\p{N}]?\p{L}+`, " hello,world", []string{" hello", ",world"}},
		{`\x{1F600}|\u00e9`, "é😀", []string{"é", "😀"}},
		{`[[:alpha:]]+`, "ab1é", []string{"ab", "é"}},
		{`(?m:.)+`, "a\nb", []string{"a\nb"}},
		{`.+`, "a\nb", []string{"a", "b"}},
	}
	for _, c := range cases {
		re, err := compileRegex(c.pat)
		if err != nil {
			t.Errorf("%q: %v", c.pat, err)
			continue
		}
		var got []string
		re.findAll(c.s, func(start, end int) { got = append(got, c.s[start:end]) })
		if !slices.Equal(got, c.want) {
			t.Errorf("%q on %q: got %q, want %q", c.pat, c.s, got, c.want)
		}
	}
}
