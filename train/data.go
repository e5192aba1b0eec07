package train

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/dstune/dstune/internal/jsontext"
	"github.com/dstune/dstune/internal/regfile"
	"github.com/dstune/dstune/tokenizer/chat"
)

// Task is what the model is trained to do, and so what an example holds.
type Task string

const (
	// TaskLM: next-token prediction over "tokens" (optional "loss_mask").
	TaskLM Task = "lm"
	// TaskClassify: one class "label" per example, predicted from "tokens".
	TaskClassify Task = "classify"
)

// DefaultMaxLineBytes caps a data line when DataOptions.MaxLineBytes is 0.
const DefaultMaxLineBytes = 16 << 20

// DataOptions say how to read and check a data file.
type DataOptions struct {
	Task Task
	// VocabSize, when > 0, is the model's vocabulary: tokens must be in
	// [0, VocabSize). Otherwise tokens need only be in [0, 2³¹).
	VocabSize int64
	// NumClasses, when > 0, bounds classify labels to [0, NumClasses).
	// Otherwise labels need only be in [0, 2³¹).
	NumClasses int64
	// MaxLineBytes caps one line (0: DefaultMaxLineBytes), so a file
	// without newlines cannot make the reader buffer it whole.
	MaxLineBytes int
	// Tokenizer encodes the text of "text", "prompt" and "completion"
	// fields and rendered "messages" (nil: such fields must hold token
	// ids, and "messages" rows are refused).
	Tokenizer TextEncoder
	// JoinText encodes a text prompt and completion joined, as Hugging
	// Face's prompt-completion training does (encodeTextPair), and cuts a
	// "text" longer than MaxLen (> 0, the length batches truncate
	// examples to) inside its text, keeping what the tokenizer's template
	// puts after it (BERT's [SEP]), as Hugging Face's truncation does.
	// Without it — a run started by an earlier version — the two are
	// encoded apart, and texts are cut as token ids are.
	JoinText bool
	MaxLen   int
	// Chat renders "messages" rows (nil: such rows are refused, with
	// ChatMissing, when set, saying why there is no template).
	Chat        *chat.ChatTemplate
	ChatMissing string
}

// TextJoined is Config.TextEncoding of runs encoding text as DataOptions's
// JoinText says.
const TextJoined = 1

// TextEncoder turns text into token ids; package tokenizer's Tokenizer is
// one. addSpecial adds what the tokenizer's template puts around a text
// (Llama's BOS); EOS is the id that ends a text (-1 when there is none).
type TextEncoder interface {
	Encode(text string, addSpecial bool) []int
	EOS() int
}

// Example is one line of data. Its slices are views into the Dataset.
type Example struct {
	Tokens []int32
	// LossMask[i] says whether token i is a target of the lm loss (token
	// 0 never is: nothing precedes it). nil means every token is.
	LossMask []bool
	Label    int64 // classify only
	Line     int   // 1-based line number in the file
	// PromptLen is the number of prompt tokens of a prompt/completion
	// example (its completion is Tokens[PromptLen:]); 0 for the others.
	PromptLen int
}

// Dataset is a checked data file held in memory, examples in file order.
type Dataset struct {
	Name string // the file it came from, for messages
	Task Task

	tokens   []int32 // all examples' tokens back to back
	lossMask []bool  // parallel to tokens; nil when no example has a loss_mask
	starts   []int   // example i is tokens[starts[i]:starts[i+1]]
	labels   []int64 // classify only
	lines    []int
	prompts  []int // PromptLen of every example; nil when no example is a prompt/completion row
	chatRows int   // the examples that are "messages" rows

	// ignored are the fields of the rows that no example form reads, each
	// with the first line it is on (a misspelt "loss_msk" would otherwise
	// pass unnoticed); at most maxIgnoredFields.
	ignored []ignoredField
}

type ignoredField struct {
	name string
	line int
}

// maxIgnoredFields bounds the ignored fields a Dataset records, found in
// the first ignoredFieldLines lines (rows are alike, and looking costs a
// second decoding of the line).
const (
	maxIgnoredFields  = 8
	ignoredFieldLines = 1000
)

// IgnoredFields says which fields of the rows no example form reads
// ("" when all are read): extra columns, or misspelt names.
func (d *Dataset) IgnoredFields() string {
	if len(d.ignored) == 0 {
		return ""
	}
	var parts []string
	for _, f := range d.ignored {
		parts = append(parts, fmt.Sprintf("%q (first on line %d)", f.name, f.line))
	}
	return strings.Join(parts, ", ")
}

// Len is the number of examples.
func (d *Dataset) Len() int { return len(d.lines) }

// Example returns example i.
func (d *Dataset) Example(i int) Example {
	lo, hi := d.starts[i], d.starts[i+1]
	e := Example{Tokens: d.tokens[lo:hi:hi], Line: d.lines[i]}
	if d.lossMask != nil {
		e.LossMask = d.lossMask[lo:hi:hi]
	}
	if d.labels != nil {
		e.Label = d.labels[i]
	}
	if d.prompts != nil {
		e.PromptLen = d.prompts[i]
	}
	return e
}

// LineError reports a bad line of a data file.
type LineError struct {
	File string
	Line int // 1-based; 0 when the error is about the whole file
	Msg  string
}

func (e *LineError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// LoadJSONL reads the data file at path; see ReadJSONL.
func LoadJSONL(path string, opts DataOptions) (*Dataset, error) {
	f, _, err := regfile.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadJSONL(f, path, opts)
}

// ReadJSONL reads JSON Lines data from r (name is used in messages). Each
// non-blank line must be a JSON object with
//
//	"tokens":    a non-empty array of integers in [0, VocabSize)
//	             (at least 2 for lm: one token has nothing to predict)
//	"loss_mask": lm only, optional: an array of 0/1 (or false/true), one
//	             per token; 1 marks a token the loss predicts
//	"label":     classify only, required: an integer in [0, NumClasses)
//
// or, instead of "tokens", the text "text" (encoded with the tokenizer's
// template) or, for lm, "prompt" and "completion", each token ids or text:
// the example is the prompt followed by the completion (text encoded
// without special tokens, and followed by the tokenizer's end token), and
// the loss predicts the completion only, or, for lm, "messages" (with
// optional "tools"): a conversation rendered with DataOptions.Chat, the
// loss on the assistant's turns (encodeChat). Other fields are ignored (see
// IgnoredFields). Field names are matched exactly ("Text" is not "text"),
// and a field given twice is an error. Lines must be UTF-8, and a string
// escape of half a UTF-16 surrogate pair ("\ud800") is an error, not
// U+FFFD. The first bad line ends the read with a *LineError naming the
// file and line; a file with no examples is an error.
func ReadJSONL(r io.Reader, name string, opts DataOptions) (*Dataset, error) {
	if opts.Task != TaskLM && opts.Task != TaskClassify {
		return nil, fmt.Errorf("%s: unknown task %q (want %q or %q)", name, opts.Task, TaskLM, TaskClassify)
	}
	maxLine := opts.MaxLineBytes
	if maxLine <= 0 {
		maxLine = DefaultMaxLineBytes
	}
	d := &Dataset{Name: name, Task: opts.Task, starts: []int{0}}
	if opts.Task == TaskClassify {
		d.labels = []int64{}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, min(maxLine, 64<<10)), maxLine)
	line := 0
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if line == 1 {
			if err := checkEncoding(text); err != nil {
				return nil, &LineError{File: name, Msg: err.Error()}
			}
			// A byte-order mark some editors write first.
			text = bytes.TrimSpace(bytes.TrimPrefix(text, utf8BOM))
		}
		if len(text) == 0 {
			continue
		}
		if err := d.addLine(text, line, opts); err != nil {
			return nil, &LineError{File: name, Line: line, Msg: err.Error()}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &LineError{File: name, Line: line + 1, Msg: fmt.Sprintf("line longer than %d bytes (the data line limit)", maxLine)}
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if d.Len() == 0 {
		return nil, &LineError{File: name, Msg: "no examples (the file is empty or blank)"}
	}
	return d, nil
}

var utf8BOM = []byte("\uFEFF")

// checkEncoding refuses a file that starts as UTF-16 or UTF-32 (by its
// byte-order mark), which JSON Lines is not.
func checkEncoding(first []byte) error {
	for _, bom := range []struct {
		mark string
		name string
	}{{"\x00\x00\xFE\xFF", "UTF-32"}, {"\xFF\xFE\x00\x00", "UTF-32"}, {"\xFE\xFF", "UTF-16"}, {"\xFF\xFE", "UTF-16"}} {
		if bytes.HasPrefix(first, []byte(bom.mark)) {
			return fmt.Errorf("the file is %s (its byte-order mark says so); JSON Lines data must be UTF-8", bom.name)
		}
	}
	return nil
}

// addLine parses one line and appends it to d, or leaves d unchanged and
// says what is wrong.
func (d *Dataset) addLine(text []byte, line int, opts DataOptions) error {
	if bytes.HasPrefix(text, utf8BOM) {
		return fmt.Errorf("the line starts with a UTF-8 byte-order mark (U+FEFF), which only the file's first line may: were files joined? remove it")
	}
	// encoding/json would replace the bytes with U+FFFD, and the text
	// would train on replacement characters.
	if at := jsontext.InvalidUTF8(text); at >= 0 {
		return fmt.Errorf("not valid UTF-8 at byte %d of the line (JSON Lines data must be UTF-8)", at+1)
	}
	if !json.Valid(text) {
		var v any
		return fmt.Errorf("not valid JSON: %v", json.Unmarshal(text, &v))
	}
	members, err := objectMembers(text)
	if err != nil {
		return err
	}
	fields, err := exampleFieldsOf(members)
	if err != nil {
		return err
	}
	if line <= ignoredFieldLines && len(d.ignored) < maxIgnoredFields {
		d.noteIgnored(members, line)
	}
	promptLen, err := fields.resolve(opts)
	if err != nil {
		return err
	}
	start := len(d.tokens)
	err = d.addTokens(fields, opts)
	if err == nil {
		switch opts.Task {
		case TaskLM:
			err = d.addLossMask(fields, start)
		case TaskClassify:
			err = d.addLabel(fields, opts)
		}
	}
	if err != nil {
		// Leave the dataset as it was before the line.
		d.tokens = d.tokens[:start]
		if d.lossMask != nil {
			d.lossMask = d.lossMask[:start]
		}
		return err
	}
	if promptLen > 0 && d.prompts == nil {
		d.prompts = make([]int, len(d.lines), cap(d.lines)+1)
	}
	if d.prompts != nil {
		d.prompts = append(d.prompts, promptLen)
	}
	if !isAbsent(fields.Messages) {
		d.chatRows++
	}
	d.starts = append(d.starts, len(d.tokens))
	d.lines = append(d.lines, line)
	return nil
}

// noteIgnored records the fields of a row that exampleFields does not
// read, once each.
func (d *Dataset) noteIgnored(members []jsonMember, line int) {
next:
	for _, m := range members {
		if slices.Contains(exampleFieldNames, m.name) {
			continue
		}
		for _, f := range d.ignored {
			if f.name == m.name {
				continue next
			}
		}
		if len(d.ignored) == maxIgnoredFields {
			break
		}
		d.ignored = append(d.ignored, ignoredField{m.name, line})
	}
	slices.SortFunc(d.ignored, func(a, b ignoredField) int { return cmp.Or(a.line-b.line, strings.Compare(a.name, b.name)) })
}

// caseVariant returns the field name exampleFields reads that name equals
// but for case ("" when none, or when name is one).
func caseVariant(name string) string {
	for _, read := range exampleFieldNames {
		if name != read && strings.EqualFold(name, read) {
			return read
		}
	}
	return ""
}

// missingField is an error about a field the line lacks.
func missingField(msg string) error { return errors.New(msg) }

// jsonMember is a member of a JSON object: its name (unescaped) and its
// value, a slice of the line starting at byte at.
type jsonMember struct {
	name  string
	value json.RawMessage
	at    int
}

// objectMembers splits text, one valid JSON value, into the members of
// the object it must be, in order, a name given twice as often as it is
// (exampleFieldsOf refuses that for the fields it reads; encoding/json
// would keep the last, and match names regardless of case).
func objectMembers(text []byte) ([]jsonMember, error) {
	i := skipJSONSpace(text, 0)
	switch text[i] {
	case '{':
	case '[':
		return nil, fmt.Errorf("want a JSON object, found a JSON array")
	case '"':
		return nil, fmt.Errorf("want a JSON object, found a JSON string")
	case 't', 'f':
		return nil, fmt.Errorf("want a JSON object, found a JSON bool")
	case 'n':
		return nil, fmt.Errorf("want a JSON object, found JSON null")
	default:
		return nil, fmt.Errorf("want a JSON object, found a JSON number")
	}
	var members []jsonMember
	i = skipJSONSpace(text, i+1)
	if text[i] == '}' {
		return members, nil
	}
	for {
		end := jsonValueEnd(text, i)
		name, err := jsonName(text[i:end])
		if err != nil {
			return nil, err
		}
		i = skipJSONSpace(text, skipJSONSpace(text, end)+1) // past the ':'
		end = jsonValueEnd(text, i)
		members = append(members, jsonMember{name: name, value: text[i:end:end], at: i})
		i = skipJSONSpace(text, end)
		if text[i] == '}' {
			return members, nil
		}
		i = skipJSONSpace(text, i+1) // past the ','
	}
}

// jsonName unescapes a member name, a JSON string.
func jsonName(raw []byte) (string, error) {
	if !bytes.ContainsRune(raw, '\\') {
		return string(raw[1 : len(raw)-1]), nil
	}
	var name string
	err := json.Unmarshal(raw, &name)
	return name, err
}

func skipJSONSpace(text []byte, i int) int {
	for i < len(text) && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r') {
		i++
	}
	return i
}

// jsonValueEnd returns the end of the valid JSON value starting at
// text[i].
func jsonValueEnd(text []byte, i int) int {
	switch text[i] {
	case '"':
		return jsonStringEnd(text, i)
	case '{', '[':
		depth := 0
		for ; i < len(text); i++ {
			switch text[i] {
			case '"':
				i = jsonStringEnd(text, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return i
	}
	// A number, true, false or null.
	for i < len(text) && !bytes.ContainsRune([]byte(",}] \t\r\n"), rune(text[i])) {
		i++
	}
	return i
}

// jsonStringEnd returns the index after the closing quote of the string
// starting at text[i].
func jsonStringEnd(text []byte, i int) int {
	for i++; i < len(text); i++ {
		switch text[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// checkSurrogates refuses a \uXXXX escape of half a UTF-16 surrogate
// pair without its other half in raw, JSON text starting at byte at of
// the line: it stands for no character, and encoding/json would decode
// it as U+FFFD.
func checkSurrogates(raw []byte, at int) error {
	if i := jsontext.LoneSurrogate(raw); i >= 0 {
		return fmt.Errorf("lone surrogate escape %s at byte %d of the line: half of a UTF-16 pair stands for no character (JSON Lines text must be valid Unicode)", raw[i:i+6], at+i+1)
	}
	return nil
}

// exampleFieldsOf picks the members exampleFields reads, by exact name.
// What it reads must be unambiguous and valid: a field given twice, or a
// lone surrogate escape in one, is an error, and so is a name that is a
// read field's but for case ("Loss_Mask"), which a reader matching
// names exactly would ignore and another tool would read. The other
// members are not looked into (IgnoredFields names them).
func exampleFieldsOf(members []jsonMember) (exampleFields, error) {
	var f exampleFields
	v := reflect.ValueOf(&f).Elem()
	for _, m := range members {
		i := slices.Index(exampleFieldNames, m.name)
		if i < 0 {
			if read := caseVariant(m.name); read != "" {
				return f, fmt.Errorf("field %q: field names are case-sensitive, and %q is not %q: rename the field (or remove it)", m.name, m.name, read)
			}
			continue
		}
		if v.Field(i).Len() > 0 {
			return f, fmt.Errorf("field %q is given twice: give each field once", m.name)
		}
		if err := checkSurrogates(m.value, m.at); err != nil {
			return f, fmt.Errorf("%q: %w", m.name, err)
		}
		v.Field(i).SetBytes(m.value)
	}
	return f, nil
}

// exampleFieldNames are the JSON names of exampleFields' fields.
var exampleFieldNames = func() []string {
	t := reflect.TypeFor[exampleFields]()
	names := make([]string, t.NumField())
	for i := range names {
		names[i] = t.Field(i).Tag.Get("json")
	}
	return names
}()

// exampleFields are a line's fields, decoded later.
type exampleFields struct {
	Tokens     json.RawMessage `json:"tokens"`
	LossMask   json.RawMessage `json:"loss_mask"`
	Label      json.RawMessage `json:"label"`
	Text       json.RawMessage `json:"text"`
	Prompt     json.RawMessage `json:"prompt"`
	Completion json.RawMessage `json:"completion"`
	Messages   json.RawMessage `json:"messages"`
	Tools      json.RawMessage `json:"tools"`
}

// resolve turns a "text" or a "prompt"/"completion" row into "tokens" (and,
// for prompt/completion, a "loss_mask" that predicts the completion only),
// returning the prompt's length (0 for the other forms).
func (f *exampleFields) resolve(opts DataOptions) (int, error) {
	forms := 0
	for _, present := range []bool{!isAbsent(f.Tokens), !isAbsent(f.Text), !isAbsent(f.Prompt) || !isAbsent(f.Completion), !isAbsent(f.Messages)} {
		if present {
			forms++
		}
	}
	switch {
	case forms == 0:
		if !isAbsent(f.Tools) {
			return 0, missingField(`"tools" goes with "messages": give the conversation`)
		}
		return 0, missingField(`no "tokens" field (nor "text", nor "prompt" and "completion", nor "messages")`)
	case forms > 1:
		return 0, fmt.Errorf(`give one of "tokens", "text", "prompt" with "completion", or "messages"`)
	case !isAbsent(f.Tools) && isAbsent(f.Messages):
		return 0, fmt.Errorf(`"tools" goes with "messages", not with the other forms`)
	case !isAbsent(f.Messages):
		if !isAbsent(f.LossMask) {
			return 0, fmt.Errorf(`"loss_mask" given with "messages", whose loss counts the assistant's turns`)
		}
		ids, mask, err := encodeChat(opts, f.Messages, f.Tools)
		if err != nil {
			return 0, err
		}
		f.Tokens, f.LossMask = idsJSON(ids), idsJSON(mask)
		return 0, nil
	case !isAbsent(f.Tokens):
		return 0, nil
	case !isAbsent(f.Text):
		ids, isText, err := encodeField(f.Text, "text", opts.Tokenizer, true)
		if err != nil {
			return 0, err
		}
		if isText && opts.JoinText && opts.MaxLen > 0 && len(ids) > opts.MaxLen {
			ids = truncateKeepingTemplate(opts.Tokenizer, f.Text, ids, opts.MaxLen)
		}
		f.Tokens = idsJSON(ids)
		return 0, nil
	}
	if isAbsent(f.Prompt) || isAbsent(f.Completion) {
		return 0, missingField(`"prompt" and "completion" go together: give both`)
	}
	if opts.Task != TaskLM {
		return 0, fmt.Errorf(`"prompt" and "completion" are for the lm task (use --task lm)`)
	}
	if !isAbsent(f.LossMask) {
		return 0, fmt.Errorf(`"loss_mask" given with "prompt" and "completion", whose loss predicts the completion`)
	}
	if ids, promptLen, ok, err := encodeTextPair(opts, f.Prompt, f.Completion); err != nil || ok {
		if err != nil {
			return 0, err
		}
		mask := make([]int, len(ids))
		for i := promptLen; i < len(mask); i++ {
			mask[i] = 1
		}
		f.Tokens, f.LossMask = idsJSON(ids), idsJSON(mask)
		return promptLen, nil
	}
	prompt, _, err := encodeField(f.Prompt, "prompt", opts.Tokenizer, true)
	if err != nil {
		return 0, err
	}
	completion, isText, err := encodeField(f.Completion, "completion", opts.Tokenizer, false)
	if err != nil {
		return 0, err
	}
	if isText && opts.Tokenizer.EOS() >= 0 {
		completion = append(completion, opts.Tokenizer.EOS())
	}
	switch {
	case len(prompt) == 0:
		return 0, fmt.Errorf(`"prompt" is empty: the completion needs a token to follow`)
	case len(completion) == 0:
		return 0, fmt.Errorf(`"completion" is empty`)
	}
	mask := make([]int, len(prompt)+len(completion))
	for i := len(prompt); i < len(mask); i++ {
		mask[i] = 1
	}
	f.Tokens = idsJSON(append(prompt, completion...))
	f.LossMask = idsJSON(mask)
	return len(prompt), nil
}

// encodeTextPair encodes a prompt and completion that are both text as
// Hugging Face's prompt-completion training does: the two texts joined and
// encoded at once, with the tokenizer's template around the whole (a
// suffix it adds, such as Llama's EOS with add_eos_token, ends the
// completion instead of splitting it from the prompt), and the tokenizer's
// EOS appended unless it ends them already; the prompt's tokens are those
// the prompt alone encodes to. Encoding the completion alone would give it
// a word start of its own (SentencePiece's "▁" before " time" of
// "Once upon a" + " time"). Where the joined text's tokens do not start
// with the prompt's — a byte-level BPE merging across the seam ("Answer: "
// + "Paris" joined is "ĠParis") — the completion is encoded alone after
// the prompt's own tokens, the prompt ending as it will when given alone
// at inference ("Ġ"), the template around both. ok is false — the caller
// encodes the fields apart — when either is not text, JoinText is off, or
// the template changes the text's own tokens.
func encodeTextPair(opts DataOptions, rawPrompt, rawCompletion json.RawMessage) (ids []int, promptLen int, ok bool, err error) {
	tok := opts.Tokenizer
	var prompt, completion string
	if !opts.JoinText || tok == nil || json.Unmarshal(rawPrompt, &prompt) != nil || json.Unmarshal(rawCompletion, &completion) != nil {
		return nil, 0, false, nil
	}
	own, err := encodeText(tok, "prompt", prompt, false)
	if err != nil || len(own) == 0 {
		return nil, 0, false, err // an empty prompt: as the fields apart say
	}
	pre, joint, suf, okJ, err := templateParts(tok, "completion", prompt+completion)
	if err != nil {
		if _, errAlone := encodeText(tok, "completion", completion, false); errAlone != nil {
			err = errAlone // named in the completion's own words
		}
		return nil, 0, false, err
	}
	if !okJ {
		return nil, 0, false, nil
	}
	if len(joint) <= len(own) || !slices.Equal(joint[:len(own)], own) {
		// The seam merges: the completion follows the prompt's own tokens.
		alone, err := encodeText(tok, "completion", completion, false)
		if err != nil {
			return nil, 0, false, err
		}
		joint = append(slices.Clone(own), alone...)
	}
	ids = append(append(append(make([]int, 0, len(pre)+len(joint)+len(suf)+1), pre...), joint...), suf...)
	if eos := tok.EOS(); eos >= 0 && ids[len(ids)-1] != eos {
		ids = append(ids, eos)
	}
	return ids, len(pre) + len(own), true, nil
}

// templateParts encodes text with the tokenizer's template and splits the
// ids into what the template put before the text's own ids, those, and
// what it put after; ok is false where the template changed the text's
// own ids too.
func templateParts(tok TextEncoder, field, text string) (pre, own, suf []int, ok bool, err error) {
	all, err := encodeText(tok, field, text, true)
	if err != nil {
		return nil, nil, nil, false, err
	}
	if own, err = encodeText(tok, field, text, false); err != nil {
		return nil, nil, nil, false, err
	}
	at := -1
	for i := 0; i+len(own) <= len(all); i++ {
		if slices.Equal(all[i:i+len(own)], own) {
			if at >= 0 {
				return nil, nil, nil, false, nil // twice: which is the text's is not known
			}
			at = i
		}
	}
	if at < 0 {
		return nil, nil, nil, false, nil
	}
	return all[:at], own, all[at+len(own):], true, nil
}

// truncateKeepingTemplate cuts the templated ids of a "text" field to
// maxLen inside the text, keeping the template's suffix, as Hugging Face's
// truncation keeps [SEP]; ids as they are where the template has no
// suffix or leaves no room.
func truncateKeepingTemplate(tok TextEncoder, raw json.RawMessage, ids []int, maxLen int) []int {
	var text string
	if json.Unmarshal(raw, &text) != nil {
		return ids
	}
	pre, own, suf, ok, err := templateParts(tok, "text", text)
	if err != nil || !ok || len(suf) == 0 || len(pre)+len(suf) >= maxLen {
		return ids
	}
	return append(append(append([]int{}, pre...), own[:maxLen-len(pre)-len(suf)]...), suf...)
}

// encodeText encodes text of the named field (addSpecial as TextEncoder
// says), with the error of a tokenizer that refuses it.
func encodeText(tok TextEncoder, field, text string, addSpecial bool) ([]int, error) {
	if checked, ok := tok.(checkedEncoder); ok {
		ids, err := checked.EncodeChecked(text, addSpecial)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", field, err)
		}
		return ids, nil
	}
	return tok.Encode(text, addSpecial), nil
}

// encodeField reads a field holding token ids or text; text is encoded
// with tok (addSpecial as TextEncoder says). isText reports which.
func encodeField(raw json.RawMessage, name string, tok TextEncoder, addSpecial bool) (ids []int, isText bool, err error) {
	var text string
	if json.Unmarshal(raw, &text) != nil {
		var v []int32
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, false, fmt.Errorf("%q: want a string or an array of token ids", name)
		}
		ids = make([]int, len(v))
		for i, x := range v {
			ids[i] = int(x)
		}
		return ids, false, nil
	}
	if tok == nil {
		return nil, true, fmt.Errorf("%q is text: give --tokenizer to encode it (or token ids)", name)
	}
	ids, err = encodeText(tok, name, text, addSpecial)
	return ids, true, err
}

// checkedEncoder is a TextEncoder that can refuse text it cannot encode
// (package tokenizer's Tokenizer can: a Unigram model without an unknown
// token); its error is then the line's, not ids that leave text out.
type checkedEncoder interface {
	EncodeChecked(text string, addSpecial bool) ([]int, error)
}

func idsJSON(ids []int) json.RawMessage {
	if ids == nil {
		ids = []int{} // an empty array, not null
	}
	b, _ := json.Marshal(ids)
	return b
}

// addTokens appends the example's tokens, each inside the vocabulary.
func (d *Dataset) addTokens(fields exampleFields, opts DataOptions) error {
	vocab := opts.VocabSize
	if vocab <= 0 || vocab > math.MaxInt32+1 {
		vocab = math.MaxInt32 + 1
	}
	start := len(d.tokens)
	var err error
	d.tokens, err = appendIntArray(d.tokens, fields.Tokens, "tokens", false, func(i int, v int64) error {
		if v < 0 || v >= vocab {
			if opts.VocabSize > 0 {
				return fmt.Errorf("tokens element %d is %d, outside the vocabulary [0, %d)", i, v, opts.VocabSize)
			}
			return fmt.Errorf("tokens element %d is %d, outside [0, 2^31)", i, v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	what := `"tokens" is empty`
	switch {
	case !isAbsent(fields.Text):
		what = `"text" encodes to no token`
	case !isAbsent(fields.Messages):
		what = `"messages" renders to no token`
	}
	// An lm example of one token predicts nothing: like one whose
	// loss_mask is all 0, it is counted and reported, not refused (a
	// short text among many would stop the run).
	if len(d.tokens) == start {
		return errors.New(what)
	}
	return nil
}

// addLossMask appends an lm example's loss mask (all ones when it has
// none but earlier examples had one); the example's tokens start at start.
func (d *Dataset) addLossMask(fields exampleFields, start int) error {
	n := len(d.tokens) - start
	if !isAbsent(fields.Label) {
		return fmt.Errorf(`"label" given, but the task is lm (use --task classify)`)
	}
	if isAbsent(fields.LossMask) {
		if d.lossMask != nil {
			for range n {
				d.lossMask = append(d.lossMask, true)
			}
		}
		return nil
	}
	if d.lossMask == nil {
		// Earlier examples had no mask: every token counted.
		d.lossMask = make([]bool, start, cap(d.tokens))
		for i := range d.lossMask {
			d.lossMask[i] = true
		}
	}
	mask, err := appendIntArray(nil, fields.LossMask, "loss_mask", true, func(i int, v int64) error {
		if v != 0 && v != 1 {
			return fmt.Errorf("loss_mask element %d is %d, want 0 or 1", i, v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(mask) != n {
		return fmt.Errorf(`"loss_mask" has %d entries for %d tokens`, len(mask), n)
	}
	for _, m := range mask {
		d.lossMask = append(d.lossMask, m == 1)
	}
	return nil
}

// addLabel appends a classify example's label, one of the model's
// classes.
func (d *Dataset) addLabel(fields exampleFields, opts DataOptions) error {
	if !isAbsent(fields.LossMask) {
		return fmt.Errorf(`"loss_mask" given, but the task is classify (use --task lm)`)
	}
	if isAbsent(fields.Label) {
		return missingField(`no "label" field (the classify task needs one per example)`)
	}
	label, err := parseInt(fields.Label)
	if err != nil {
		return fmt.Errorf(`"label" %s`, err)
	}
	classes := opts.NumClasses
	if classes <= 0 || classes > math.MaxInt32+1 {
		classes = math.MaxInt32 + 1
	}
	if label < 0 || label >= classes {
		if opts.NumClasses > 0 {
			return fmt.Errorf(`"label" is %d, outside the model's %d classes [0, %d)`, label, opts.NumClasses, opts.NumClasses)
		}
		return fmt.Errorf(`"label" is %d, outside [0, 2^31)`, label)
	}
	d.labels = append(d.labels, label)
	return nil
}

// isAbsent reports whether a field was missing or null.
func isAbsent(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// appendIntArray parses raw, a valid JSON value, as an array of integers
// (with allowBool, true and false count as 1 and 0), checks each with check
// and appends it to dst as int32. It reports the first element that is not
// an integer.
func appendIntArray(dst []int32, raw json.RawMessage, field string, allowBool bool, check func(i int, v int64) error) ([]int32, error) {
	s := raw
	skipSpace := func() {
		for len(s) > 0 && (s[0] == ' ' || s[0] == '\t' || s[0] == '\n' || s[0] == '\r') {
			s = s[1:]
		}
	}
	skipSpace()
	if len(s) == 0 || s[0] != '[' {
		return dst, fmt.Errorf("%q is not an array", field)
	}
	s = s[1:]
	skipSpace()
	if len(s) > 0 && s[0] == ']' {
		return dst, nil
	}
	for i := 0; ; i++ {
		skipSpace()
		// The element runs to the next ',' or ']'; raw is valid JSON, so a
		// string, array or object element shows itself by its first byte.
		end := 0
		for end < len(s) && s[end] != ',' && s[end] != ']' {
			if c := s[end]; c == '[' || c == '{' || c == '"' {
				return dst, fmt.Errorf("%s element %d is not an integer", field, i)
			}
			end++
		}
		elem := bytes.TrimRight(s[:end], " \t\r\n")
		var v int64
		switch {
		case allowBool && string(elem) == "true":
			v = 1
		case allowBool && string(elem) == "false":
			v = 0
		default:
			var err error
			if v, err = parseInt(elem); err != nil {
				return dst, fmt.Errorf("%s element %d %s", field, i, err)
			}
		}
		if err := check(i, v); err != nil {
			return dst, err
		}
		dst = append(dst, int32(v))
		s = s[end:]
		if s[0] == ']' {
			return dst, nil
		}
		s = s[1:] // the ','
	}
}

// parseInt parses a JSON number that must be an integer literal fitting
// int64; its error completes a sentence about the value.
func parseInt(b []byte) (int64, error) {
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err == nil {
		return v, nil
	}
	if f, ferr := strconv.ParseFloat(string(b), 64); ferr == nil {
		if f == math.Trunc(f) && math.Abs(f) < 1<<63 {
			return 0, fmt.Errorf("is %s, want an integer written without a fraction or exponent", b)
		}
		if f == math.Trunc(f) {
			return 0, fmt.Errorf("is %s, out of range", b)
		}
		return 0, fmt.Errorf("is %s, not an integer", b)
	}
	return 0, fmt.Errorf("is %s, not an integer", b)
}
