package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrMalformed is wrapped by every error about the content of a tokenizer
// file (as opposed to errors reading it).
var ErrMalformed = errors.New("malformed tokenizer file")

// FormatError is a tokenizer file that cannot be used: the file, the part
// of it (a JSON path such as "model.merges[12]" or a byte offset) and what
// was wrong.
type FormatError struct {
	File string
	Part string
	Err  error
}

func (e *FormatError) Error() string {
	if e.Part == "" {
		return fmt.Sprintf("%s: %v", e.File, e.Err)
	}
	return fmt.Sprintf("%s: %s: %v", e.File, e.Part, e.Err)
}

func (e *FormatError) Unwrap() []error { return []error{ErrMalformed, e.Err} }

// maxFileSize bounds the tokenizer files Load reads.
const maxFileSize = 1 << 30

// Tokenizer encodes text to token ids and decodes ids to text. It is
// immutable once loaded and safe for concurrent use.
type Tokenizer struct {
	name    string
	kind    string
	vocab   []string // id → token string; "" where no token has the id
	ids     map[string]int
	special []bool

	bos, eos, pad, unk int

	hf    *hfPipeline
	llama *llama2cModel
}

// hfPipeline is a tokenizer.json's pipeline.
type hfPipeline struct {
	added      *addedVocab
	normalizer normalizer
	pre        preTokenizer
	model      model
	post       postProcessor
	decoder    decoder
}

// Load reads a tokenizer file: a Hugging Face tokenizer.json (a
// tokenizer_config.json beside it, when present, names the BOS, EOS and
// PAD tokens), a llama2.c tokenizer.bin, or a directory holding a
// tokenizer.json.
func Load(path string) (*Tokenizer, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "tokenizer.json")
	}
	data, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	if looksLikeJSON(data) {
		config, err := readBounded(filepath.Join(filepath.Dir(path), "tokenizer_config.json"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return ParseHF(path, data, config)
	}
	return ParseLlama2C(path, data)
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > maxFileSize {
		return nil, &FormatError{File: path, Err: fmt.Errorf("file of %d bytes is larger than %d", st.Size(), maxFileSize)}
	}
	return os.ReadFile(path)
}

func looksLikeJSON(data []byte) bool {
	data = bytes.TrimLeft(data, " \t\r\n\ufeff")
	return len(data) > 0 && data[0] == '{'
}

// ParseHF reads a Hugging Face tokenizer.json (name is used in errors).
// config, which may be nil, is the tokenizer_config.json that names the
// BOS, EOS and PAD tokens; without it they are recognized by the post-
// processor's template and by the usual names.
func ParseHF(name string, data, config []byte) (*Tokenizer, error) {
	fail := func(part string, err error) (*Tokenizer, error) {
		return nil, &FormatError{File: name, Part: part, Err: err}
	}
	var f hfFile
	if err := json.Unmarshal(data, &f); err != nil {
		return fail("", fmt.Errorf("not a tokenizer.json: %w", err))
	}
	if !present(f.Model) {
		return fail("model", errors.New("missing"))
	}
	m, err := parseModel(f.Model)
	if err != nil {
		return fail("model", err)
	}
	p := &hfPipeline{model: m.model}
	if present(f.Normalizer) {
		if p.normalizer, err = parseNormalizer(f.Normalizer, 0); err != nil {
			return fail("normalizer", err)
		}
	}
	if present(f.PreTokenizer) {
		if p.pre, err = parsePreTokenizer(f.PreTokenizer, 0); err != nil {
			return fail("pre_tokenizer", err)
		}
	}
	if present(f.Decoder) {
		if p.decoder, err = parseDecoder(f.Decoder, 0); err != nil {
			return fail("decoder", err)
		}
	}

	p.pre = withRawBytes(p.pre, p.model)
	t := &Tokenizer{name: name, kind: m.kind, hf: p, unk: m.unk}
	maxID := -1
	for _, id := range m.vocab {
		maxID = max(maxID, id)
	}
	added := make([]addedToken, 0, len(f.AddedTokens))
	for i, a := range f.AddedTokens {
		part := fmt.Sprintf("added_tokens[%d]", i)
		if a.ID == nil || a.Content == nil {
			return fail(part, errors.New(`needs "id" and "content"`))
		}
		if *a.ID < 0 || *a.ID >= maxVocabSize {
			return fail(part, fmt.Errorf("id %d out of range", *a.ID))
		}
		if len(*a.Content) > maxTokenBytes {
			return fail(part, fmt.Errorf("content of %d bytes exceeds %d", len(*a.Content), maxTokenBytes))
		}
		tok := addedToken{
			id: int(*a.ID), content: *a.Content, singleWord: a.SingleWord,
			lstrip: a.LStrip, rstrip: a.RStrip, normalized: !a.Special, special: a.Special,
		}
		if a.Normalized != nil {
			tok.normalized = *a.Normalized
		}
		added = append(added, tok)
		maxID = max(maxID, tok.id)
	}
	// Ids may leave holes (a vocabulary need not be dense), but not so
	// many that a small file asks for a huge table.
	if entries := len(m.vocab) + len(added); maxID >= 16*entries+1024 {
		return fail("model.vocab", fmt.Errorf("largest id %d is far beyond the %d entries", maxID, entries))
	}
	t.vocab = make([]string, maxID+1)
	t.special = make([]bool, maxID+1)
	t.ids = make(map[string]int, len(m.vocab)+len(added))
	for tok, id := range m.vocab {
		if old, dup := t.ids[tok]; !dup || id < old {
			t.ids[tok] = id
		}
		if t.vocab[id] == "" || tok < t.vocab[id] {
			t.vocab[id] = tok
		}
	}
	for _, a := range added {
		t.vocab[a.id] = a.content
		t.ids[a.content] = a.id
		if a.special {
			t.special[a.id] = true
		}
	}
	p.added = newAddedVocab(added, p.normalizer)
	if present(f.PostProcessor) {
		if p.post, err = parsePostProcessor(f.PostProcessor, t.TokenID, 0); err != nil {
			return fail("post_processor", err)
		}
	}
	if err := t.checkIDs(); err != nil {
		return fail("post_processor", err)
	}
	t.findSpecialTokens(config)
	return t, nil
}

// withRawBytes lets a BPE model do the byte-level mapping of a ByteLevel
// pre-tokenizer that comes last, when the model can.
func withRawBytes(pre preTokenizer, m model) preTokenizer {
	bpe, ok := m.(*bpeModel)
	if !ok {
		return pre
	}
	switch p := pre.(type) {
	case byteLevelPreTokenizer:
		if bpe.takeRawBytes() {
			p.rawBytes = true
		}
		return p
	case preTokenizerSequence:
		if len(p) == 0 {
			return p
		}
		if last, ok := p[len(p)-1].(byteLevelPreTokenizer); ok && bpe.takeRawBytes() {
			last.rawBytes = true
			seq := append(preTokenizerSequence(nil), p...)
			seq[len(seq)-1] = last
			return seq
		}
	}
	return pre
}

// checkIDs makes sure every id the post-processor inserts exists.
func (t *Tokenizer) checkIDs() error {
	check := func(id int) error {
		if id < 0 || id >= len(t.vocab) {
			return fmt.Errorf("special token id %d is not in the vocabulary of %d", id, len(t.vocab))
		}
		return nil
	}
	var walk func(p postProcessor) error
	walk = func(p postProcessor) error {
		switch p := p.(type) {
		case *templateProcessor:
			for _, it := range append(append([]templateItem(nil), p.single...), p.pair...) {
				for _, id := range it.special {
					if err := check(id); err != nil {
						return err
					}
				}
			}
		case *bertProcessor:
			if err := check(p.cls); err != nil {
				return err
			}
			return check(p.sep)
		case processorSequence:
			for _, q := range p {
				if err := walk(q); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if t.hf.post == nil {
		return nil
	}
	return walk(t.hf.post)
}

// findSpecialTokens sets BOS, EOS and PAD from tokenizer_config.json, else
// from the template and the usual names.
func (t *Tokenizer) findSpecialTokens(config []byte) {
	t.bos, t.eos, t.pad = -1, -1, -1
	if len(config) > 0 {
		var c map[string]json.RawMessage
		if json.Unmarshal(config, &c) == nil {
			t.bos = t.configToken(c["bos_token"])
			t.eos = t.configToken(c["eos_token"])
			t.pad = t.configToken(c["pad_token"])
		}
	}
	if tp, ok := t.hf.post.(*templateProcessor); ok && len(tp.single) > 0 {
		if first := tp.single[0]; t.bos < 0 && first.sequence < 0 && len(first.special) == 1 {
			t.bos = first.special[0]
		}
		if last := tp.single[len(tp.single)-1]; t.eos < 0 && last.sequence < 0 && len(last.special) == 1 {
			t.eos = last.special[0]
		}
	}
	if bp, ok := t.hf.post.(*bertProcessor); ok {
		if t.bos < 0 {
			t.bos = bp.cls
		}
		if t.eos < 0 {
			t.eos = bp.sep
		}
	}
	byName := func(names ...string) int {
		for _, n := range names {
			if id, ok := t.ids[n]; ok {
				return id
			}
		}
		return -1
	}
	if t.bos < 0 {
		t.bos = byName("<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>", "[CLS]", "<|endoftext|>")
	}
	if t.eos < 0 {
		t.eos = byName("<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>", "[SEP]", "<|im_end|>")
	}
	if t.pad < 0 {
		t.pad = byName("<pad>", "[PAD]", "<|pad|>", "<|padding|>", "<|finetune_right_pad_id|>")
	}
}

// configToken reads a token of tokenizer_config.json: a string or an
// object with "content".
func (t *Tokenizer) configToken(raw json.RawMessage) int {
	if !present(raw) {
		return -1
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		var obj struct {
			Content string `json:"content"`
		}
		if json.Unmarshal(raw, &obj) != nil {
			return -1
		}
		s = obj.Content
	}
	if id, ok := t.ids[s]; ok {
		return id
	}
	return -1
}

// Kind names the tokenizer's model: "BPE", "WordPiece", "Unigram",
// "WordLevel" or "llama2.c".
func (t *Tokenizer) Kind() string { return t.kind }

// VocabSize is one more than the largest token id: the number of rows an
// embedding for this tokenizer needs.
func (t *Tokenizer) VocabSize() int { return len(t.vocab) }

// FitsModel checks the tokenizer against a model's vocabulary of vocab
// entries (0: unknown). Tokens with ids the model has no rows for are an
// error: they are not the model's tokens — unless all of them are special
// tokens added after the model was made (a padding token, say), which
// only gives a warning. Far fewer ids (under 90 %) gives a warning too:
// the model's ids past the tokenizer's decode to nothing, and text
// encodes to a part of the model's vocabulary only.
func (t *Tokenizer) FitsModel(vocab int) (warning string, err error) {
	n := t.VocabSize()
	switch {
	case vocab <= 0:
	case n > vocab:
		var beyond []string
		for id := vocab; id < n; id++ {
			if t.vocab[id] == "" {
				continue
			}
			if id >= len(t.special) || !t.special[id] {
				return "", fmt.Errorf("the tokenizer has %d token ids, more than the model's vocabulary of %d (token %d is %q): it is not this model's tokenizer", n, vocab, id, t.vocab[id])
			}
			if len(beyond) < 3 {
				beyond = append(beyond, fmt.Sprintf("%q", t.vocab[id]))
			}
		}
		return fmt.Sprintf("the tokenizer's special tokens from id %d on (%s) are past the model's vocabulary of %d: text holding them cannot be encoded for this model", vocab, strings.Join(beyond, ", "), vocab), nil
	case n < vocab-vocab/10:
		return fmt.Sprintf("the tokenizer has %d token ids, the model's vocabulary %d: is it this model's tokenizer? (ids from %d on decode to nothing)", n, vocab, n), nil
	}
	return "", nil
}

// BOS, EOS and PAD return the beginning-of-sequence, end-of-sequence and
// padding token ids, or -1 when the tokenizer has none.
func (t *Tokenizer) BOS() int { return t.bos }
func (t *Tokenizer) EOS() int { return t.eos }
func (t *Tokenizer) PAD() int { return t.pad }

// Token returns the token's string as the vocabulary stores it (such as
// "Ġthe", "▁the", "##ing" or "<0x0A>"), or "" for an id outside the
// vocabulary. Decode([]int{id}, false) gives the text it stands for.
func (t *Tokenizer) Token(id int) string {
	if id < 0 || id >= len(t.vocab) {
		return ""
	}
	return t.vocab[id]
}

// TokenID returns the id of a token string, as the vocabulary stores it.
func (t *Tokenizer) TokenID(token string) (int, bool) {
	id, ok := t.ids[token]
	return id, ok
}

// IsSpecial reports whether id is a special token (skipped by Decode with
// skipSpecial).
func (t *Tokenizer) IsSpecial(id int) bool {
	return id >= 0 && id < len(t.special) && t.special[id]
}

// Encode returns the token ids of text. With addSpecial, the special
// tokens the model expects are added: the post-processor's template of a
// tokenizer.json (e.g. BOS for Llama, [CLS] … [SEP] for BERT), BOS for a
// llama2.c tokenizer. Special-token strings inside text (such as
// "<|endoftext|>") always become their tokens, as in the reference
// implementations.
func (t *Tokenizer) Encode(text string, addSpecial bool) []int {
	if t.llama != nil {
		return t.llama.encode(text, addSpecial)
	}
	ids := t.hf.encodeSequence(text)
	if t.hf.post == nil {
		return ids
	}
	ids, _ = t.hf.post.process(ids, nil, addSpecial)
	return ids
}

// EncodePair encodes two sequences as one input (BERT's sentence pairs)
// and returns the ids with their token type ids (0 for the first
// sequence's part, 1 for the second's, as the template says).
func (t *Tokenizer) EncodePair(first, second string, addSpecial bool) (ids, typeIDs []int) {
	if t.llama != nil {
		a := t.llama.encode(first, addSpecial)
		b := t.llama.encode(second, false)
		ids = append(a, b...)
		typeIDs = make([]int, len(ids))
		for i := len(a); i < len(ids); i++ {
			typeIDs[i] = 1
		}
		return ids, typeIDs
	}
	a, b := t.hf.encodeSequence(first), t.hf.encodeSequence(second)
	if b == nil {
		b = []int{}
	}
	post := t.hf.post
	if post == nil {
		post = identityProcessor{}
	}
	return post.process(a, b, addSpecial)
}

func (p *hfPipeline) encodeSequence(text string) []int {
	var ids []int
	tokenize := func(pc piece) { ids = p.model.tokenize(ids, pc.text) }
	for _, s := range p.added.extract(text, p.normalizer) {
		switch {
		case s.token >= 0:
			ids = append(ids, p.added.tokens[s.token].id)
		case p.pre != nil:
			p.pre.preTokenize(piece{text: s.text, atStart: s.atStart}, tokenize)
		default:
			tokenize(piece{text: s.text, atStart: s.atStart})
		}
	}
	return ids
}

// Decode returns the text of ids. With skipSpecial, special tokens (BOS,
// EOS, padding, chat markers) are left out. Ids outside the vocabulary are
// skipped. Bytes that do not form valid UTF-8 become U+FFFD.
func (t *Tokenizer) Decode(ids []int, skipSpecial bool) string {
	return t.decode(ids, skipSpecial, false)
}

// decode implements Decode; raw keeps invalid and incomplete UTF-8 as
// bytes for the stream decoder.
func (t *Tokenizer) decode(ids []int, skipSpecial, raw bool) string {
	if t.llama != nil {
		return t.llama.decode(ids, skipSpecial, raw)
	}
	tokens := make([]string, 0, len(ids))
	for _, id := range ids {
		if id < 0 || id >= len(t.vocab) || t.vocab[id] == "" && !t.hasToken(id) {
			continue
		}
		if skipSpecial && t.special[id] {
			continue
		}
		tokens = append(tokens, t.vocab[id])
	}
	if t.hf.decoder == nil {
		return strings.Join(tokens, " ")
	}
	return strings.Join(t.hf.decoder.decodeChain(tokens, raw), "")
}

// hasToken reports whether id is a token (the empty string can be one).
func (t *Tokenizer) hasToken(id int) bool {
	got, ok := t.ids[t.vocab[id]]
	return ok && got == id
}
