package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Reading Hugging Face's tokenizer.json: each component is an object with
// a "type" naming its kind (or, for old files' models, recognizable by its
// fields), decoded here into the pipeline's parts. Everything read is
// checked; an error names the component and field.

// Bounds on what a tokenizer.json may ask for.
const (
	maxVocabSize    = 1 << 23
	maxTokenBytes   = 1 << 16
	maxSequenceLen  = 1 << 12
	maxStripCount   = 1 << 10
	maxMaxInputChar = 1 << 20
)

type hfFile struct {
	AddedTokens   []hfAddedToken  `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	Model         json.RawMessage `json:"model"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
}

type hfAddedToken struct {
	ID         *int64  `json:"id"`
	Content    *string `json:"content"`
	SingleWord bool    `json:"single_word"`
	LStrip     bool    `json:"lstrip"`
	RStrip     bool    `json:"rstrip"`
	Normalized *bool   `json:"normalized"`
	Special    bool    `json:"special"`
}

// present reports whether a component is given (not absent, not null).
func present(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && !bytes.Equal(raw, []byte("null"))
}

// componentType reads the "type" field of a component.
func componentType(raw json.RawMessage) (string, error) {
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return "", err
	}
	return head.Type, nil
}

type hfPattern struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

func (p hfPattern) compile() (pattern, error) {
	switch {
	case p.String != nil && *p.String == "":
		// The Rust library makes a regex of the escaped string, and the
		// empty regex matches (empty) before every character and at the end.
		re, err := compileRegex("")
		if err != nil {
			return pattern{}, err
		}
		return pattern{re: re}, nil
	case p.String != nil:
		return pattern{literal: *p.String}, nil
	case p.Regex != nil:
		re, err := compileRegex(*p.Regex)
		if err != nil {
			return pattern{}, err
		}
		return pattern{re: re}, nil
	}
	return pattern{}, fmt.Errorf(`pattern has neither "String" nor "Regex"`)
}

func parseNormalizer(raw json.RawMessage, depth int) (normalizer, error) {
	if depth > 16 {
		return nil, fmt.Errorf("sequences nested deeper than 16")
	}
	typ, err := componentType(raw)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "Sequence":
		var c struct {
			Normalizers []json.RawMessage `json:"normalizers"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		var seq normalizerSequence
		for i, sub := range c.Normalizers {
			if !present(sub) {
				continue
			}
			n, err := parseNormalizer(sub, depth+1)
			if err != nil {
				return nil, fmt.Errorf("normalizers[%d]: %w", i, err)
			}
			seq = append(seq, n)
		}
		return seq, nil
	case "NFC":
		return unicodeNormalizer{norm.NFC}, nil
	case "NFD":
		return unicodeNormalizer{norm.NFD}, nil
	case "NFKC":
		return unicodeNormalizer{norm.NFKC}, nil
	case "NFKD":
		return unicodeNormalizer{norm.NFKD}, nil
	case "Lowercase":
		return lowercaseNormalizer{}, nil
	case "StripAccents":
		return stripAccentsNormalizer{}, nil
	case "Nmt":
		return nmtNormalizer{}, nil
	case "ByteLevel":
		return byteLevelNormalizer{}, nil
	case "Strip":
		c := struct {
			Left  *bool `json:"strip_left"`
			Right *bool `json:"strip_right"`
		}{}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		return stripNormalizer{left: c.Left == nil || *c.Left, right: c.Right == nil || *c.Right}, nil
	case "Replace":
		var c struct {
			Pattern hfPattern `json:"pattern"`
			Content string    `json:"content"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		p, err := c.Pattern.compile()
		if err != nil {
			return nil, fmt.Errorf("pattern: %w", err)
		}
		return replaceNormalizer{pattern: p, content: c.Content}, nil
	case "Prepend":
		var c struct {
			Prepend string `json:"prepend"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		return prependNormalizer{c.Prepend}, nil
	case "Append":
		var c struct {
			Append string `json:"append"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		return appendNormalizer{c.Append}, nil
	case "BertNormalizer":
		c := struct {
			CleanText    *bool `json:"clean_text"`
			ChineseChars *bool `json:"handle_chinese_chars"`
			StripAccents *bool `json:"strip_accents"`
			Lowercase    *bool `json:"lowercase"`
		}{}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		n := bertNormalizer{cleanText: true, chineseChars: true, lowercase: true}
		if c.CleanText != nil {
			n.cleanText = *c.CleanText
		}
		if c.ChineseChars != nil {
			n.chineseChars = *c.ChineseChars
		}
		if c.Lowercase != nil {
			n.lowercase = *c.Lowercase
		}
		n.stripAccents = n.lowercase
		if c.StripAccents != nil {
			n.stripAccents = *c.StripAccents
		}
		return n, nil
	case "Precompiled":
		var c struct {
			Charsmap *string `json:"precompiled_charsmap"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		if c.Charsmap == nil || *c.Charsmap == "" {
			return normalizerSequence{}, nil
		}
		return newPrecompiled(*c.Charsmap)
	case "":
		return nil, fmt.Errorf(`missing "type"`)
	}
	return nil, fmt.Errorf("unsupported normalizer type %q", typ)
}

func parseBehavior(s string) (splitBehavior, error) {
	switch strings.ToLower(s) {
	case "removed":
		return splitRemoved, nil
	case "isolated":
		return splitIsolated, nil
	case "mergedwithprevious":
		return splitMergedWithPrevious, nil
	case "mergedwithnext":
		return splitMergedWithNext, nil
	case "contiguous":
		return splitContiguous, nil
	}
	return 0, fmt.Errorf("unknown split behavior %q", s)
}

func parsePreTokenizer(raw json.RawMessage, depth int) (preTokenizer, error) {
	if depth > 16 {
		return nil, fmt.Errorf("sequences nested deeper than 16")
	}
	typ, err := componentType(raw)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "Sequence":
		var c struct {
			PreTokenizers []json.RawMessage `json:"pretokenizers"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		var seq preTokenizerSequence
		for i, sub := range c.PreTokenizers {
			if !present(sub) {
				continue
			}
			p, err := parsePreTokenizer(sub, depth+1)
			if err != nil {
				return nil, fmt.Errorf("pretokenizers[%d]: %w", i, err)
			}
			seq = append(seq, p)
		}
		return seq, nil
	case "ByteLevel":
		c := struct {
			AddPrefixSpace *bool `json:"add_prefix_space"`
			UseRegex       *bool `json:"use_regex"`
		}{}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		return byteLevelPreTokenizer{
			addPrefixSpace: c.AddPrefixSpace == nil || *c.AddPrefixSpace,
			useRegex:       c.UseRegex == nil || *c.UseRegex,
		}, nil
	case "Whitespace":
		return whitespacePreTokenizer{}, nil
	case "WhitespaceSplit":
		return runeSplitPreTokenizer{isWhitespace, splitRemoved}, nil
	case "BertPreTokenizer":
		return bertPreTokenizer{}, nil
	case "Punctuation":
		c := struct {
			Behavior *string `json:"behavior"`
		}{}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		b := splitIsolated
		if c.Behavior != nil {
			if b, err = parseBehavior(*c.Behavior); err != nil {
				return nil, err
			}
		}
		return runeSplitPreTokenizer{isPunctuation, b}, nil
	case "Digits":
		var c struct {
			Individual bool `json:"individual_digits"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		b := splitContiguous
		if c.Individual {
			b = splitIsolated
		}
		return runeSplitPreTokenizer{isNumeric, b}, nil
	case "CharDelimiterSplit":
		var c struct {
			Delimiter string `json:"delimiter"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		d, err := oneRune(c.Delimiter, "delimiter")
		if err != nil {
			return nil, err
		}
		return runeSplitPreTokenizer{func(r rune) bool { return r == d }, splitRemoved}, nil
	case "Metaspace":
		c := struct {
			Replacement    string  `json:"replacement"`
			AddPrefixSpace *bool   `json:"add_prefix_space"`
			PrependScheme  *string `json:"prepend_scheme"`
			Split          *bool   `json:"split"`
		}{Replacement: "▁"}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		rep, err := oneRune(c.Replacement, "replacement")
		if err != nil {
			return nil, err
		}
		scheme, err := parsePrependScheme(c.PrependScheme, c.AddPrefixSpace)
		if err != nil {
			return nil, err
		}
		return metaspacePreTokenizer{replacement: rep, scheme: scheme, split: c.Split == nil || *c.Split}, nil
	case "Split":
		var c struct {
			Pattern  hfPattern `json:"pattern"`
			Behavior string    `json:"behavior"`
			Invert   bool      `json:"invert"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		p, err := c.Pattern.compile()
		if err != nil {
			return nil, fmt.Errorf("pattern: %w", err)
		}
		b, err := parseBehavior(c.Behavior)
		if err != nil {
			return nil, err
		}
		return splitPreTokenizer{pattern: p, behavior: b, invert: c.Invert}, nil
	case "FixedLength":
		c := struct {
			Length int `json:"length"`
		}{Length: 5}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		if c.Length <= 0 || c.Length > maxTokenBytes {
			return nil, fmt.Errorf("length %d out of range", c.Length)
		}
		return fixedLengthPreTokenizer{c.Length}, nil
	case "":
		return nil, fmt.Errorf(`missing "type"`)
	}
	return nil, fmt.Errorf("unsupported pre-tokenizer type %q", typ)
}

func oneRune(s, field string) (rune, error) {
	r, w := utf8.DecodeRuneInString(s)
	if s == "" || w != len(s) || r == utf8.RuneError {
		return 0, fmt.Errorf("%s %q is not one character", field, s)
	}
	return r, nil
}

func parsePrependScheme(scheme *string, addPrefixSpace *bool) (prependScheme, error) {
	if scheme != nil {
		switch *scheme {
		case "always":
			return prependAlways, nil
		case "first":
			return prependFirst, nil
		case "never":
			return prependNever, nil
		}
		return 0, fmt.Errorf("unknown prepend_scheme %q", *scheme)
	}
	if addPrefixSpace != nil && !*addPrefixSpace {
		return prependNever, nil
	}
	return prependAlways, nil
}

// hfModel is the model read from tokenizer.json with its vocabulary.
type hfModel struct {
	kind  string
	model model
	vocab map[string]int // token → id
	unk   int
}

func parseModel(raw json.RawMessage) (*hfModel, error) {
	typ, err := componentType(raw)
	if err != nil {
		return nil, err
	}
	if typ == "" {
		typ, err = guessModelType(raw)
		if err != nil {
			return nil, err
		}
	}
	switch typ {
	case "BPE":
		return parseBPE(raw)
	case "WordPiece":
		c := struct {
			Vocab    map[string]int64 `json:"vocab"`
			Unk      string           `json:"unk_token"`
			Prefix   *string          `json:"continuing_subword_prefix"`
			MaxChars *int             `json:"max_input_chars_per_word"`
		}{Unk: "[UNK]"}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		vocab, err := checkVocab(c.Vocab)
		if err != nil {
			return nil, err
		}
		m := &wordPieceModel{vocab: vocab, prefix: "##", maxChars: 100, cache: &wordCache{}}
		if c.Prefix != nil {
			m.prefix = *c.Prefix
		}
		if c.MaxChars != nil {
			if *c.MaxChars < 0 || *c.MaxChars > maxMaxInputChar {
				return nil, fmt.Errorf("max_input_chars_per_word %d out of range", *c.MaxChars)
			}
			m.maxChars = *c.MaxChars
		}
		id, ok := vocab[c.Unk]
		if !ok {
			return nil, fmt.Errorf("unk_token %q is not in the vocabulary", c.Unk)
		}
		m.unk = id
		return &hfModel{kind: "WordPiece", model: m, vocab: vocab, unk: id}, nil
	case "WordLevel":
		var c struct {
			Vocab map[string]int64 `json:"vocab"`
			Unk   string           `json:"unk_token"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		vocab, err := checkVocab(c.Vocab)
		if err != nil {
			return nil, err
		}
		m := &wordLevelModel{vocab: vocab, unk: -1}
		if c.Unk != "" {
			id, ok := vocab[c.Unk]
			if !ok {
				return nil, fmt.Errorf("unk_token %q is not in the vocabulary", c.Unk)
			}
			m.unk = id
		}
		return &hfModel{kind: "WordLevel", model: m, vocab: vocab, unk: m.unk}, nil
	case "Unigram":
		return parseUnigram(raw)
	}
	return nil, fmt.Errorf("unsupported model type %q", typ)
}

// guessModelType recognizes the models of files written before "type".
func guessModelType(raw json.RawMessage) (string, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return "", err
	}
	vocab := bytes.TrimSpace(fields["vocab"])
	switch {
	case len(vocab) > 0 && vocab[0] == '[':
		return "Unigram", nil
	case fields["merges"] != nil:
		return "BPE", nil
	case fields["continuing_subword_prefix"] != nil || fields["max_input_chars_per_word"] != nil:
		return "WordPiece", nil
	case fields["vocab"] != nil:
		return "WordLevel", nil
	}
	return "", fmt.Errorf(`no "type" and no fields that tell the model's kind`)
}

func checkVocab(v map[string]int64) (map[string]int, error) {
	if len(v) > maxVocabSize {
		return nil, fmt.Errorf("vocabulary of %d entries exceeds %d", len(v), maxVocabSize)
	}
	out := make(map[string]int, len(v))
	for tok, id := range v {
		if id < 0 || id >= maxVocabSize {
			return nil, fmt.Errorf("vocab[%q]: id %d out of range", tok, id)
		}
		if len(tok) > maxTokenBytes {
			return nil, fmt.Errorf("vocabulary entry of %d bytes exceeds %d", len(tok), maxTokenBytes)
		}
		out[tok] = int(id)
	}
	return out, nil
}

func parseBPE(raw json.RawMessage) (*hfModel, error) {
	var c struct {
		Vocab        map[string]int64 `json:"vocab"`
		Merges       json.RawMessage  `json:"merges"`
		Unk          *string          `json:"unk_token"`
		Prefix       *string          `json:"continuing_subword_prefix"`
		Suffix       *string          `json:"end_of_word_suffix"`
		FuseUnk      bool             `json:"fuse_unk"`
		ByteFallback bool             `json:"byte_fallback"`
		IgnoreMerges bool             `json:"ignore_merges"`
		Dropout      *float64         `json:"dropout"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	if c.Dropout != nil && *c.Dropout != 0 {
		return nil, fmt.Errorf("dropout %v: BPE dropout is a training-time augmentation dstune does not apply (set it to null)", *c.Dropout)
	}
	vocab, err := checkVocab(c.Vocab)
	if err != nil {
		return nil, err
	}
	merges, err := parseMerges(c.Merges)
	if err != nil {
		return nil, err
	}
	opts := bpeOptions{fuseUnk: c.FuseUnk, byteFallback: c.ByteFallback, ignoreMerges: c.IgnoreMerges}
	if c.Prefix != nil {
		opts.prefix = *c.Prefix
	}
	if c.Suffix != nil {
		opts.suffix = *c.Suffix
	}
	unk := ""
	if c.Unk != nil {
		unk = *c.Unk
	}
	m, err := newBPE(vocab, merges, unk, opts)
	if err != nil {
		return nil, err
	}
	return &hfModel{kind: "BPE", model: m, vocab: vocab, unk: m.unk}, nil
}

// parseMerges reads merges as "a b" strings or as [a, b] pairs.
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if !present(raw) {
		return nil, nil
	}
	// The first element says the format; trying both would scan a large
	// array twice.
	trimmed := bytes.TrimSpace(raw)
	var body []byte
	if len(trimmed) > 0 && trimmed[0] == '[' {
		body = bytes.TrimSpace(trimmed[1:])
	}
	if len(body) == 0 || body[0] != '[' {
		var asStrings []string
		if err := json.Unmarshal(raw, &asStrings); err != nil {
			return nil, fmt.Errorf("merges: %w", err)
		}
		out := make([][2]string, len(asStrings))
		for i, s := range asStrings {
			a, b, ok := strings.Cut(s, " ")
			if !ok || strings.Contains(b, " ") {
				return nil, fmt.Errorf("merges[%d]: %q is not two tokens separated by one space", i, s)
			}
			out[i] = [2]string{a, b}
		}
		return out, nil
	}
	var asPairs [][]string
	if err := json.Unmarshal(raw, &asPairs); err != nil {
		return nil, fmt.Errorf("merges: neither strings nor pairs of strings: %w", err)
	}
	out := make([][2]string, len(asPairs))
	for i, p := range asPairs {
		if len(p) != 2 {
			return nil, fmt.Errorf("merges[%d]: %d elements, want 2", i, len(p))
		}
		out[i] = [2]string{p[0], p[1]}
	}
	return out, nil
}

func parseUnigram(raw json.RawMessage) (*hfModel, error) {
	var c struct {
		Vocab        [][]json.RawMessage `json:"vocab"`
		UnkID        *int64              `json:"unk_id"`
		ByteFallback bool                `json:"byte_fallback"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	if len(c.Vocab) > maxVocabSize {
		return nil, fmt.Errorf("vocabulary of %d entries exceeds %d", len(c.Vocab), maxVocabSize)
	}
	pieces := make([]string, len(c.Vocab))
	scores := make([]float64, len(c.Vocab))
	for i, e := range c.Vocab {
		if len(e) != 2 {
			return nil, fmt.Errorf("vocab[%d]: %d elements, want [piece, score]", i, len(e))
		}
		if err := json.Unmarshal(e[0], &pieces[i]); err != nil {
			return nil, fmt.Errorf("vocab[%d]: piece: %w", i, err)
		}
		score, err := parseSerdeFloat(string(bytes.TrimSpace(e[1])))
		if err != nil {
			return nil, fmt.Errorf("vocab[%d]: score: %w", i, err)
		}
		scores[i] = score
		if len(pieces[i]) > maxTokenBytes {
			return nil, fmt.Errorf("vocab[%d]: piece of %d bytes exceeds %d", i, len(pieces[i]), maxTokenBytes)
		}
		if math.IsInf(scores[i], 0) || math.IsNaN(scores[i]) {
			return nil, fmt.Errorf("vocab[%d]: score %v is not finite", i, scores[i])
		}
	}
	if len(c.Vocab) == 0 {
		return nil, fmt.Errorf("vocab is empty: a Unigram model needs pieces")
	}
	unk := -1
	if c.UnkID != nil {
		if *c.UnkID < 0 || *c.UnkID >= int64(len(pieces)) {
			return nil, fmt.Errorf("unk_id %d is outside the vocabulary of %d pieces", *c.UnkID, len(pieces))
		}
		unk = int(*c.UnkID)
	}
	m, err := newUnigram(pieces, scores, unk, c.ByteFallback)
	if err != nil {
		return nil, err
	}
	return &hfModel{kind: "Unigram", model: m, vocab: m.vocab, unk: unk}, nil
}

// hfTemplateItem is one element of a TemplateProcessing template.
type hfTemplateItem struct {
	Sequence *struct {
		ID     string `json:"id"`
		TypeID int    `json:"type_id"`
	} `json:"Sequence"`
	SpecialToken *struct {
		ID     string `json:"id"`
		TypeID int    `json:"type_id"`
	} `json:"SpecialToken"`
}

func parsePostProcessor(raw json.RawMessage, tokenID func(string) (int, bool), depth int) (postProcessor, error) {
	if depth > 16 {
		return nil, fmt.Errorf("sequences nested deeper than 16")
	}
	typ, err := componentType(raw)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "TemplateProcessing":
		var c struct {
			Single        []hfTemplateItem `json:"single"`
			Pair          []hfTemplateItem `json:"pair"`
			SpecialTokens map[string]struct {
				ID  string  `json:"id"`
				IDs []int64 `json:"ids"`
			} `json:"special_tokens"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		convert := func(name string, items []hfTemplateItem) ([]templateItem, error) {
			if len(items) > maxSequenceLen {
				return nil, fmt.Errorf("%s: template of %d items", name, len(items))
			}
			var out []templateItem
			for i, it := range items {
				switch {
				case it.Sequence != nil:
					seq := 0
					switch it.Sequence.ID {
					case "A":
					case "B":
						seq = 1
					default:
						return nil, fmt.Errorf("%s[%d]: sequence %q is neither A nor B", name, i, it.Sequence.ID)
					}
					out = append(out, templateItem{sequence: seq, typeID: it.Sequence.TypeID})
				case it.SpecialToken != nil:
					st, ok := c.SpecialTokens[it.SpecialToken.ID]
					if !ok {
						return nil, fmt.Errorf("%s[%d]: special token %q is not in special_tokens", name, i, it.SpecialToken.ID)
					}
					if len(st.IDs) > maxSequenceLen {
						return nil, fmt.Errorf("special_tokens[%q]: %d ids", it.SpecialToken.ID, len(st.IDs))
					}
					ids := make([]int, len(st.IDs))
					for k, id := range st.IDs {
						if id < 0 || id >= maxVocabSize {
							return nil, fmt.Errorf("special_tokens[%q]: id %d out of range", it.SpecialToken.ID, id)
						}
						ids[k] = int(id)
					}
					out = append(out, templateItem{sequence: -1, special: ids, typeID: it.SpecialToken.TypeID})
				default:
					return nil, fmt.Errorf("%s[%d]: neither Sequence nor SpecialToken", name, i)
				}
			}
			return out, nil
		}
		single, err := convert("single", c.Single)
		if err != nil {
			return nil, err
		}
		pair, err := convert("pair", c.Pair)
		if err != nil {
			return nil, err
		}
		return &templateProcessor{single: single, pair: pair}, nil
	case "BertProcessing", "RobertaProcessing":
		var c struct {
			Sep [2]json.RawMessage `json:"sep"`
			Cls [2]json.RawMessage `json:"cls"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		var sep, cls int64
		if err := json.Unmarshal(c.Sep[1], &sep); err != nil {
			return nil, fmt.Errorf("sep: %w", err)
		}
		if err := json.Unmarshal(c.Cls[1], &cls); err != nil {
			return nil, fmt.Errorf("cls: %w", err)
		}
		if sep < 0 || sep >= maxVocabSize || cls < 0 || cls >= maxVocabSize {
			return nil, fmt.Errorf("cls %d or sep %d out of range", cls, sep)
		}
		return &bertProcessor{cls: int(cls), sep: int(sep), roberta: typ == "RobertaProcessing"}, nil
	case "ByteLevel":
		return identityProcessor{}, nil
	case "Sequence":
		var c struct {
			Processors []json.RawMessage `json:"processors"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		var seq processorSequence
		for i, sub := range c.Processors {
			if !present(sub) {
				continue
			}
			p, err := parsePostProcessor(sub, tokenID, depth+1)
			if err != nil {
				return nil, fmt.Errorf("processors[%d]: %w", i, err)
			}
			seq = append(seq, p)
		}
		return seq, nil
	case "":
		return nil, fmt.Errorf(`missing "type"`)
	}
	return nil, fmt.Errorf("unsupported post-processor type %q", typ)
}

func parseDecoder(raw json.RawMessage, depth int) (decoder, error) {
	if depth > 16 {
		return nil, fmt.Errorf("sequences nested deeper than 16")
	}
	typ, err := componentType(raw)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "Sequence":
		var c struct {
			Decoders []json.RawMessage `json:"decoders"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		var seq decoderSequence
		for i, sub := range c.Decoders {
			if !present(sub) {
				continue
			}
			d, err := parseDecoder(sub, depth+1)
			if err != nil {
				return nil, fmt.Errorf("decoders[%d]: %w", i, err)
			}
			seq = append(seq, d)
		}
		return seq, nil
	case "ByteLevel":
		return byteLevelDecoder{}, nil
	case "ByteFallback":
		return byteFallbackDecoder{}, nil
	case "Fuse":
		return fuseDecoder{}, nil
	case "Metaspace":
		c := struct {
			Replacement    string  `json:"replacement"`
			AddPrefixSpace *bool   `json:"add_prefix_space"`
			PrependScheme  *string `json:"prepend_scheme"`
		}{Replacement: "▁"}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		rep, err := oneRune(c.Replacement, "replacement")
		if err != nil {
			return nil, err
		}
		scheme, err := parsePrependScheme(c.PrependScheme, c.AddPrefixSpace)
		if err != nil {
			return nil, err
		}
		return metaspaceDecoder{replacement: rep, scheme: scheme}, nil
	case "WordPiece":
		c := struct {
			Prefix  string `json:"prefix"`
			Cleanup *bool  `json:"cleanup"`
		}{Prefix: "##"}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		return wordPieceDecoder{prefix: c.Prefix, cleanup: c.Cleanup == nil || *c.Cleanup}, nil
	case "BPEDecoder":
		c := struct {
			Suffix string `json:"suffix"`
		}{Suffix: "</w>"}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		return bpeDecoder{suffix: c.Suffix}, nil
	case "CTC":
		c := struct {
			Pad       string `json:"pad_token"`
			Delimiter string `json:"word_delimiter_token"`
			Cleanup   *bool  `json:"cleanup"`
		}{Pad: "<pad>", Delimiter: "|"}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		return ctcDecoder{pad: c.Pad, delimiter: c.Delimiter, cleanup: c.Cleanup == nil || *c.Cleanup}, nil
	case "Strip":
		var c struct {
			Content string `json:"content"`
			Start   int    `json:"start"`
			Stop    int    `json:"stop"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		r, err := oneRune(c.Content, "content")
		if err != nil {
			return nil, err
		}
		if c.Start < 0 || c.Stop < 0 || c.Start > maxStripCount || c.Stop > maxStripCount {
			return nil, fmt.Errorf("start %d or stop %d out of range", c.Start, c.Stop)
		}
		return stripDecoder{content: r, start: c.Start, stop: c.Stop}, nil
	case "Replace":
		var c struct {
			Pattern hfPattern `json:"pattern"`
			Content string    `json:"content"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, err
		}
		p, err := c.Pattern.compile()
		if err != nil {
			return nil, fmt.Errorf("pattern: %w", err)
		}
		return replaceDecoder{pattern: p, content: c.Content}, nil
	case "":
		return nil, fmt.Errorf(`missing "type"`)
	}
	return nil, fmt.Errorf("unsupported decoder type %q", typ)
}
