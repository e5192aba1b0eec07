package tokenizer

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/dstune/dstune/internal/regfile"
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
	if !looksLikeJSON(data) {
		if err := notATokenizer(path, data); err != nil {
			return nil, err
		}
		if !strings.EqualFold(filepath.Ext(path), ".json") || plausibleLlama2C(data) {
			return ParseLlama2C(path, data)
		}
		// A .json name whose content is neither: ParseHF says why it is
		// not JSON.
	}
	config, err := readBounded(Beside(path, "tokenizer_config.json"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return ParseHF(path, data, config)
}

// Beside is the path of the file name in the directory of the tokenizer at
// path (a tokenizer file, or a directory holding tokenizer.json): where
// Hugging Face keeps tokenizer_config.json and generation_config.json.
func Beside(path, name string) string {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return filepath.Join(path, name)
	}
	return filepath.Join(filepath.Dir(path), name)
}

func readBounded(path string) ([]byte, error) {
	data, err := regfile.ReadFile(path, maxFileSize)
	var large *regfile.TooLargeError
	if errors.As(err, &large) {
		if large.Size < 0 { // a pipe
			return nil, &FormatError{File: path, Err: fmt.Errorf("more than %d bytes", maxFileSize)}
		}
		return nil, &FormatError{File: path, Err: fmt.Errorf("file of %d bytes is larger than %d", large.Size, maxFileSize)}
	}
	return data, err
}

var utf8BOM = []byte("\ufeff")

func looksLikeJSON(data []byte) bool {
	data = bytes.TrimLeft(bytes.TrimPrefix(data, utf8BOM), " \t\r\n")
	return len(data) > 0 && data[0] == '{'
}

// plausibleLlama2C reports whether data starts as a llama2.c tokenizer.bin:
// a max_token_length in range. Text of four bytes or more never does (its
// last header byte would be at least a tab).
func plausibleLlama2C(data []byte) bool {
	if len(data) < 4 {
		return false
	}
	n := int32(binary.LittleEndian.Uint32(data))
	return n > 0 && n <= maxTokenBytes
}

// notATokenizer names what a file that is not a tokenizer.json object is,
// when it is recognizably something else than a llama2.c tokenizer.bin
// (whose reader would otherwise report a nonsensical header): empty, UTF-16
// text, or JSON other than an object.
func notATokenizer(name string, data []byte) error {
	fail := func(format string, args ...any) error {
		return &FormatError{File: name, Err: fmt.Errorf(format, args...)}
	}
	body := bytes.TrimPrefix(data, utf8BOM)
	switch {
	case len(data) == 0:
		return fail("the file is empty (want a tokenizer.json or a llama2.c tokenizer.bin)")
	case len(bytes.TrimSpace(body)) == 0:
		return fail("the file holds only white space (want a tokenizer.json or a llama2.c tokenizer.bin)")
	case plausibleLlama2C(data):
		return nil
	case isUTF16(data):
		return fail("the file is UTF-16 text: a tokenizer.json must be UTF-8 (save it as UTF-8)")
	case json.Valid(body):
		return fail("the file is JSON but %s, not an object: a tokenizer.json is an object holding a \"model\"", jsonKind(body))
	}
	return nil
}

// isUTF16 reports whether data starts with a UTF-16 byte-order mark, or
// reads as UTF-16 text of ASCII characters (every other byte zero).
func isUTF16(data []byte) bool {
	if bytes.HasPrefix(data, []byte{0xFF, 0xFE}) || bytes.HasPrefix(data, []byte{0xFE, 0xFF}) {
		return true
	}
	if len(data) < 4 {
		return false
	}
	ascii := func(c byte) bool { return c >= 0x20 && c < 0x7F || c == '\t' || c == '\n' || c == '\r' }
	little := ascii(data[0]) && data[1] == 0 && ascii(data[2]) && data[3] == 0
	big := data[0] == 0 && ascii(data[1]) && data[2] == 0 && ascii(data[3])
	return little || big
}

// jsonKind names the kind of the JSON value data (valid JSON) holds.
func jsonKind(data []byte) string {
	data = bytes.TrimSpace(data)
	switch data[0] {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// ParseHF reads a Hugging Face tokenizer.json (name is used in errors).
// config, which may be nil, is the tokenizer_config.json that names the
// BOS, EOS and PAD tokens; without it they are recognized by the post-
// processor's template and by the usual names.
func ParseHF(name string, data, config []byte) (*Tokenizer, error) {
	fail := func(part string, err error) (*Tokenizer, error) {
		return nil, &FormatError{File: name, Part: part, Err: err}
	}
	// A byte-order mark some editors write (JSON itself has none).
	data = bytes.TrimPrefix(data, utf8BOM)
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
	taken := make([]bool, maxID+1)
	for tok, id := range m.vocab {
		if taken[id] {
			return fail("model.vocab", sharedID(m.vocab))
		}
		taken[id] = true
		t.vocab[id] = tok
		t.ids[tok] = id
	}
	if i, err := checkAdded(added, t.vocab, taken, m.vocab); err != nil {
		return fail(fmt.Sprintf("added_tokens[%d]", i), err)
	}
	for _, a := range added {
		t.vocab[a.id] = a.content
		t.ids[a.content] = a.id
		if a.special {
			t.special[a.id] = true
		}
	}
	if p.added, err = newAddedVocab(added, p.normalizer); err != nil {
		return fail("normalizer", err)
	}
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

// sharedID describes the first id (the smallest) that two tokens of vocab
// share: each would decode as the other.
func sharedID(vocab map[string]int) error {
	byID := make(map[int][]string)
	first := -1
	for tok, id := range vocab {
		byID[id] = append(byID[id], tok)
		if len(byID[id]) > 1 && (first < 0 || id < first) {
			first = id
		}
	}
	toks := byID[first]
	slices.Sort(toks)
	return fmt.Errorf("%q and %q both have id %d: an id is one token", toks[0], toks[1], first)
}

// checkAdded checks the added tokens against the model's vocabulary (vocab
// by id, taken where the model has a token, ids by token) and each other:
// an added token that is a vocabulary entry must have its id, and an id is
// one token. Hugging Face's library would renumber such tokens (and so
// encode other ids than the file says); a repeated entry, same id and same
// content, is harmless. It returns the index of the first bad token.
func checkAdded(added []addedToken, vocab []string, taken []bool, ids map[string]int) (int, error) {
	byID := make(map[int]int, len(added))
	byContent := make(map[string]int, len(added))
	for i, a := range added {
		if j, ok := byID[a.id]; ok && added[j].content != a.content {
			return i, fmt.Errorf("id %d (%q) is also added_tokens[%d] (%q): an id is one token", a.id, a.content, j, added[j].content)
		}
		if j, ok := byContent[a.content]; ok && added[j].id != a.id {
			return i, fmt.Errorf("%q has id %d here and %d in added_tokens[%d]", a.content, a.id, added[j].id, j)
		}
		if taken[a.id] && vocab[a.id] != a.content {
			return i, fmt.Errorf("id %d (%q) is already the vocabulary's token %q: an id is one token", a.id, a.content, vocab[a.id])
		}
		if id, ok := ids[a.content]; ok && id != a.id {
			return i, fmt.Errorf("%q has id %d here and %d in the vocabulary", a.content, a.id, id)
		}
		byID[a.id], byContent[a.content] = i, i
	}
	return 0, nil
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
// encodes to a part of the model's vocabulary only. Encoding never gives
// an id past the tokenizer's own (a tokenizer.bin must hold its byte
// tokens), so fewer ids cannot make training or a prompt use ids that
// are not tokens; models whose embedding is padded past the tokenizer
// are common.
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

// IsByteToken reports whether id is a byte token ("<0xE4>": a
// byte-fallback BPE's or llama2.c's). A run of them decodes as a whole (a
// run that is not valid UTF-8 as one U+FFFD per byte), so a streaming
// decoder holds a run back until it ends.
func (t *Tokenizer) IsByteToken(id int) bool {
	_, ok := byteToken(t.Token(id))
	return ok
}

// ByteToken returns the byte a byte token (<0xE4>) stands for; ok is
// false for other ids.
func (t *Tokenizer) ByteToken(id int) (b byte, ok bool) { return byteToken(t.Token(id)) }

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
//
// Encode cannot report the two failures there are: text that a Unigram
// model without an unknown token (no "unk_id") cannot cover, whose
// characters Encode leaves out, and a section of text the normalizers
// would make longer than their limit (256 MiB), which Encode leaves out
// whole. EncodeChecked reports them; callers that take text from users
// should use it.
func (t *Tokenizer) Encode(text string, addSpecial bool) []int {
	ids, _ := t.encode(text, addSpecial)
	return ids
}

// EncodeChecked is Encode, but text the tokenizer cannot encode is an
// error (naming the character) instead of ids without it: the Rust
// library refuses such text too ("Encountered an unknown token but
// `unk_id` is missing").
func (t *Tokenizer) EncodeChecked(text string, addSpecial bool) ([]int, error) {
	ids, err := t.encode(text, addSpecial)
	if err != nil {
		return nil, err
	}
	return ids, nil
}

func (t *Tokenizer) encode(text string, addSpecial bool) ([]int, error) {
	if t.llama != nil {
		return t.llama.encode(text, addSpecial), nil
	}
	ids, err := t.hf.encodeSequence(text)
	if err != nil {
		err = fmt.Errorf("%s: %w", t.name, err)
	}
	if t.hf.post == nil {
		return ids, err
	}
	ids, _ = t.hf.post.process(ids, nil, addSpecial)
	return ids, err
}

// EncodePair encodes two sequences as one input (BERT's sentence pairs)
// and returns the ids with their token type ids (0 for the first
// sequence's part, 1 for the second's, as the template says).
// Like Encode it leaves out what it cannot encode.
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
	a, _ := t.hf.encodeSequence(first)
	b, _ := t.hf.encodeSequence(second)
	if b == nil {
		b = []int{}
	}
	post := t.hf.post
	if post == nil {
		post = identityProcessor{}
	}
	return post.process(a, b, addSpecial)
}

// checkedModel is a model that can fail to encode a word (a Unigram model
// without an unknown token); tokenize leaves out what it cannot encode.
type checkedModel interface {
	tokenizeChecked(dst []int, word string) ([]int, error)
}

// encodeSequence returns the ids of text and the first word the model
// could not encode, leaving that word's uncovered characters out.
func (p *hfPipeline) encodeSequence(text string) ([]int, error) {
	var ids []int
	var firstErr error
	tokenize := func(pc piece) { ids = p.model.tokenize(ids, pc.text) }
	if checked, ok := p.model.(checkedModel); ok {
		tokenize = func(pc piece) {
			var err error
			ids, err = checked.tokenizeChecked(ids, pc.text)
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	sections, err := p.added.extract(text, p.normalizer)
	if err != nil {
		return nil, err
	}
	for _, s := range sections {
		switch {
		case s.token >= 0:
			ids = append(ids, p.added.tokens[s.token].id)
		case p.pre != nil:
			p.pre.preTokenize(piece{text: s.text, atStart: s.atStart}, tokenize)
		default:
			tokenize(piece{text: s.text, atStart: s.atStart})
		}
	}
	return ids, firstErr
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
