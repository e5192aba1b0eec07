package main

import (
	"regexp"
	"strings"
)

// A task rewrites a sentence; ok is false when the sentence does not
// suit it (nothing to rewrite).
type task struct {
	name    string
	about   string
	rewrite func(sentence string) (completion string, ok bool)
}

var tasks = []task{
	{"names", "every character's name replaced by one the model has never seen", renameTask},
	{"style", "common words replaced by a more ornate register (big → enormous, said → whispered, …)", styleTask},
	{"quote", "a sentence about a character, said by that character: Lily saw a dog. → \"I saw a dog,\" said Lily.", quoteTask},
}

// newNames maps the names of TinyStories' characters to names from
// elsewhere, each several tokens long in its 512-token vocabulary.
var newNames = map[string]string{
	"Lily": "Ingrid", "Tim": "Oskar", "Timmy": "Oskie", "Tom": "Ravi", "Tommy": "Ravin",
	"Sam": "Yusuf", "Sue": "Bronwen", "Ben": "Kofi", "Mia": "Freya", "Max": "Anton",
	"Anna": "Leilani", "Lucy": "Marisol", "Jack": "Dmitri", "Daisy": "Ottilie", "Sara": "Priya",
	"Sarah": "Priya", "Bob": "Tarquin", "Spot": "Pip", "Kitty": "Mochi", "Jane": "Signe",
	"Amy": "Noor", "Joe": "Emeka", "Mary": "Astrid", "Bella": "Ximena", "Jill": "Greta",
	"Emma": "Hanne", "Molly": "Rosalind", "Lila": "Ilse", "Zoe": "Saoirse", "Billy": "Cosimo",
	"Ellie": "Wilhelmina", "Mark": "Thaddeus", "Bobo": "Pavel", "Toby": "Lorcan", "Leo": "Ignatius",
}

var wordRE = regexp.MustCompile(`[A-Za-z]+`)

// replaceWords rewrites every whole word that m maps (as written, and
// capitalized at the start of the sentence); ok reports a change.
func replaceWords(s string, m map[string]string) (string, bool) {
	changed := false
	out := wordRE.ReplaceAllStringFunc(s, func(w string) string {
		if r, ok := m[w]; ok {
			changed = true
			return r
		}
		if lw := strings.ToLower(w[:1]) + w[1:]; lw != w {
			if r, ok := m[lw]; ok {
				changed = true
				return strings.ToUpper(r[:1]) + r[1:]
			}
		}
		return w
	})
	return out, changed
}

func renameTask(s string) (string, bool) { return replaceWords(s, newNames) }

// ornate is the style task's register: frequent TinyStories words and
// their replacements.
var ornate = map[string]string{
	"big": "enormous", "little": "wee", "small": "minute", "happy": "joyous", "sad": "sorrowful",
	"said": "whispered", "saw": "beheld", "very": "exceedingly", "mom": "mother", "mommy": "mother",
	"dad": "father", "daddy": "father", "toy": "plaything", "toys": "playthings", "ball": "sphere",
	"play": "frolic", "played": "frolicked", "went": "ventured", "loved": "adored", "wanted": "desired",
	"friend": "companion", "friends": "companions", "park": "meadow", "house": "abode", "tree": "oak",
	"dog": "hound", "bird": "songbird", "girl": "maiden", "boy": "lad", "look": "gaze", "looked": "gazed",
	"good": "splendid", "fun": "merriment", "run": "dash", "ran": "dashed", "help": "assist",
	"scared": "frightened", "nice": "delightful", "pretty": "lovely", "car": "carriage", "box": "chest",
}

func styleTask(s string) (string, bool) { return replaceWords(s, ornate) }

// firstPerson turns a third-person object pronoun of the speaker into
// the first person.
var firstPerson = map[string]string{"her": "my", "his": "my", "herself": "myself", "himself": "myself"}

// quoteTask turns "Lily saw a dog." into "\"I saw a dog,\" said Lily.": a
// sentence that starts with a known name and ends with a period.
func quoteTask(s string) (string, bool) {
	name, rest, ok := strings.Cut(s, " ")
	if _, known := newNames[name]; !known || !ok || !strings.HasSuffix(rest, ".") || strings.ContainsAny(rest, "\"") {
		return "", false
	}
	if strings.HasPrefix(rest, "and ") || strings.HasPrefix(rest, "'s ") {
		return "", false
	}
	rest, _ = replaceWords(strings.TrimSuffix(rest, "."), firstPerson)
	return "\"I " + rest + ",\" said " + name + ".", true
}
