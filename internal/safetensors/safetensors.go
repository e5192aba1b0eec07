package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/dstune/dstune/internal/atomicfile"
	"github.com/dstune/dstune/internal/regfile"
)

// MaxHeaderBytes caps the JSON header a file may declare (the reference
// implementation's limit), so a forged length cannot make a reader allocate
// more than this for the header.
const MaxHeaderBytes = 100 << 20

// MetadataKey is the reserved header key holding the string→string metadata.
const MetadataKey = "__metadata__"

// DType names an element type as safetensors spells it.
type DType string

// The element types this package reads and writes.
const (
	Bool   DType = "BOOL"
	U8     DType = "U8"
	I8     DType = "I8"
	F8E5M2 DType = "F8_E5M2"
	F8E4M3 DType = "F8_E4M3"
	I16    DType = "I16"
	U16    DType = "U16"
	F16    DType = "F16"
	BF16   DType = "BF16"
	I32    DType = "I32"
	U32    DType = "U32"
	F32    DType = "F32"
	F64    DType = "F64"
	I64    DType = "I64"
	U64    DType = "U64"
)

// Size is the byte size of one element, or 0 for a name this package does
// not know.
func (d DType) Size() int {
	switch d {
	case Bool, U8, I8, F8E5M2, F8E4M3:
		return 1
	case I16, U16, F16, BF16:
		return 2
	case I32, U32, F32:
		return 4
	case F64, I64, U64:
		return 8
	}
	return 0
}

// Tensor is one named tensor: Data holds its elements as raw little-endian
// bytes, len(Data) = NumElements(Shape)·DType.Size().
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	Data  []byte
}

// File is a decoded safetensors file. Tensors are in file (offset) order;
// Metadata is nil when the header has no "__metadata__".
type File struct {
	Metadata map[string]string
	Tensors  []Tensor
}

// Tensor returns the tensor with the given name, or nil.
func (f *File) Tensor(name string) *Tensor {
	for i := range f.Tensors {
		if f.Tensors[i].Name == name {
			return &f.Tensors[i]
		}
	}
	return nil
}

// FormatError reports a malformed file or an invalid tensor description.
// Tensor names the tensor at fault, "" when the fault is not in one tensor.
type FormatError struct {
	Tensor string
	Msg    string
}

func (e *FormatError) Error() string {
	if e.Tensor == "" {
		return e.Msg
	}
	return fmt.Sprintf("tensor %q: %s", e.Tensor, e.Msg)
}

func formatErrorf(tensor, format string, args ...any) error {
	return &FormatError{Tensor: tensor, Msg: fmt.Sprintf(format, args...)}
}

// NumElements is the product of shape, or ok = false when a dimension is
// negative or the product overflows int64.
func NumElements(shape []int64) (n int64, ok bool) {
	n = 1
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, false
		}
		n *= d
	}
	return n, true
}

// byteLength is numel(shape)·size(dtype), checked for overflow.
func byteLength(name string, dtype DType, shape []int64) (int64, error) {
	size := int64(dtype.Size())
	if size == 0 {
		return 0, formatErrorf(name, "unknown dtype %q", string(dtype))
	}
	n, ok := NumElements(shape)
	if !ok || n > math.MaxInt64/size {
		return 0, formatErrorf(name, "shape %v: negative dimension or element count overflows", shape)
	}
	return n * size, nil
}

// layoutOrder is the order Encode lays tensors out in: larger elements
// first, then by name. Because every tensor's byte length is a multiple of
// its element size and the header is padded to 8 bytes, this keeps each
// tensor aligned to its element size within the file (so readers may view
// the bytes in place), as the reference writer does.
func layoutOrder(tensors []Tensor) []*Tensor {
	order := make([]*Tensor, len(tensors))
	for i := range tensors {
		order[i] = &tensors[i]
	}
	slices.SortStableFunc(order, func(a, b *Tensor) int {
		if sa, sb := a.DType.Size(), b.DType.Size(); sa != sb {
			return sb - sa
		}
		return strings.Compare(a.Name, b.Name)
	})
	return order
}

// Encode writes metadata (may be nil) and tensors as a safetensors file.
// It fails, writing nothing, when a tensor name is empty, repeated or
// "__metadata__", a dtype is unknown, or len(Data) does not match the shape.
func Encode(w io.Writer, metadata map[string]string, tensors []Tensor) error {
	header, order, err := encodeHeader(metadata, tensors)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(header)))
	bw.Write(lenBuf[:])
	bw.Write(header)
	for _, t := range order {
		bw.Write(t.Data)
	}
	return bw.Flush()
}

func encodeHeader(metadata map[string]string, tensors []Tensor) ([]byte, []*Tensor, error) {
	seen := make(map[string]bool, len(tensors))
	for i := range tensors {
		t := &tensors[i]
		switch {
		case t.Name == "":
			return nil, nil, formatErrorf("", "tensor %d has an empty name", i)
		case t.Name == MetadataKey:
			return nil, nil, formatErrorf(t.Name, "name is reserved for the metadata")
		case !utf8.ValidString(t.Name):
			return nil, nil, formatErrorf(t.Name, "name is not valid UTF-8")
		case seen[t.Name]:
			return nil, nil, formatErrorf(t.Name, "name appears twice")
		}
		seen[t.Name] = true
		n, err := byteLength(t.Name, t.DType, t.Shape)
		if err != nil {
			return nil, nil, err
		}
		if int64(len(t.Data)) != n {
			return nil, nil, formatErrorf(t.Name, "%d data bytes, want %d for %s%v", len(t.Data), n, t.DType, t.Shape)
		}
	}
	for k, v := range metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, nil, formatErrorf("", "metadata %q is not valid UTF-8", k)
		}
	}

	var h bytes.Buffer
	h.WriteByte('{')
	if metadata != nil {
		writeJSONString(&h, MetadataKey)
		h.WriteString(":{")
		for i, k := range slices.Sorted(mapKeys(metadata)) {
			if i > 0 {
				h.WriteByte(',')
			}
			writeJSONString(&h, k)
			h.WriteByte(':')
			writeJSONString(&h, metadata[k])
		}
		h.WriteByte('}')
	}
	order := layoutOrder(tensors)
	var offset int64
	for i, t := range order {
		if i > 0 || metadata != nil {
			h.WriteByte(',')
		}
		writeJSONString(&h, t.Name)
		h.WriteString(`:{"dtype":`)
		writeJSONString(&h, string(t.DType))
		h.WriteString(`,"shape":[`)
		for j, d := range t.Shape {
			if j > 0 {
				h.WriteByte(',')
			}
			h.WriteString(strconv.FormatInt(d, 10))
		}
		end := offset + int64(len(t.Data))
		fmt.Fprintf(&h, `],"data_offsets":[%d,%d]}`, offset, end)
		offset = end
	}
	h.WriteByte('}')
	for h.Len()%8 != 0 {
		h.WriteByte(' ')
	}
	if h.Len() > MaxHeaderBytes {
		return nil, nil, formatErrorf("", "header of %d bytes exceeds the %d-byte limit", h.Len(), MaxHeaderBytes)
	}
	return h.Bytes(), order, nil
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// writeJSONString writes s as a JSON string without HTML escaping, so
// names read back in other tools exactly as written.
func writeJSONString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)           // a valid UTF-8 string always encodes
	b.Truncate(b.Len() - 1) // Encode appends a newline
}

// WriteFile encodes the file to path atomically: it writes a temporary file
// in the same directory, syncs it and renames it over path, so readers see
// the old file or the complete new one, never a partial file.
func WriteFile(path string, metadata map[string]string, tensors []Tensor) error {
	if _, _, err := encodeHeader(metadata, tensors); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return atomicfile.WriteWith(path, func(f *os.File) error {
		if err := Encode(f, metadata, tensors); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		return nil
	})
}

// ReadFile reads and decodes the file at path. Errors name the path. Only
// regular files are read (a FIFO is refused, not waited on), and the
// header is read and checked before the data: a file whose header does
// not describe exactly its bytes is refused before they are read, so a
// forged file cannot make the reader allocate more than its header and a
// well-formed file's size.
func ReadFile(path string) (*File, error) {
	f, size, err := regfile.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	file, err := readFrom(f, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return file, nil
}

// readFrom decodes the size bytes of r as Decode does, reading the header
// before the data.
func readFrom(r io.Reader, size int64) (*File, error) {
	if size < 8 {
		return nil, formatErrorf("", "file is %d bytes, shorter than the 8-byte header length", size)
	}
	var length [8]byte
	if _, err := io.ReadFull(r, length[:]); err != nil {
		return nil, err
	}
	headerLen, err := checkHeaderLength(binary.LittleEndian.Uint64(length[:]), uint64(size-8))
	if err != nil {
		return nil, err
	}
	header := make([]byte, headerLen)
	if _, err := io.ReadFull(r, header); err != nil {
		return nil, err
	}
	file := &File{}
	entries, err := decodeHeader(header, file)
	if err != nil {
		return nil, err
	}
	bufLen := size - 8 - int64(headerLen)
	if err := layOut(entries, bufLen); err != nil {
		return nil, err
	}
	if bufLen > math.MaxInt {
		return nil, fmt.Errorf("a data buffer of %d bytes is too large to read", bufLen)
	}
	buffer := make([]byte, bufLen)
	if _, err := io.ReadFull(r, buffer); err != nil {
		return nil, err
	}
	return place(file, entries, buffer), nil
}

// Decode parses a safetensors file held in data. The returned tensors' Data
// are views of data (not copies). Every violation of the format is a
// *FormatError.
func Decode(data []byte) (*File, error) {
	if len(data) < 8 {
		return nil, formatErrorf("", "file is %d bytes, shorter than the 8-byte header length", len(data))
	}
	headerLen, err := checkHeaderLength(binary.LittleEndian.Uint64(data), uint64(len(data)-8))
	if err != nil {
		return nil, err
	}
	file := &File{}
	entries, err := decodeHeader(data[8:8+headerLen], file)
	if err != nil {
		return nil, err
	}
	buffer := data[8+headerLen:]
	if err := layOut(entries, int64(len(buffer))); err != nil {
		return nil, err
	}
	return place(file, entries, buffer), nil
}

// checkHeaderLength checks the header length a file declares against the
// limit and the after bytes that follow the length.
func checkHeaderLength(headerLen, after uint64) (int, error) {
	switch {
	case headerLen > MaxHeaderBytes && headerLen > after:
		// Beyond both the limit and the file: another format's bytes (an
		// ONNX model, a text) read as a length, not a safetensors file
		// whose header is too large or cut short.
		return 0, formatErrorf("", "not a safetensors file: its first 8 bytes give a header of %d bytes, more than the %d bytes the file holds after them", headerLen, after)
	case headerLen > MaxHeaderBytes:
		return 0, formatErrorf("", "header length %d exceeds the %d-byte limit", headerLen, MaxHeaderBytes)
	case headerLen > after:
		return 0, formatErrorf("", "header length %d exceeds the %d bytes after the length: the file is cut short, or not a safetensors file", headerLen, after)
	}
	return int(headerLen), nil
}

// decodeHeader checks the header's text and parses its tensors (and the
// metadata into file).
func decodeHeader(header []byte, file *File) ([]headerEntry, error) {
	if !utf8.Valid(header) {
		return nil, formatErrorf("", "header is not valid UTF-8")
	}
	if trimmed := bytes.TrimLeft(header, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, formatErrorf("", "header does not start with a JSON object")
	}
	return parseHeader(header, file)
}

// place points every tensor's Data at its bytes of buffer (laid out by
// layOut) and gives them to file.
func place(file *File, entries []headerEntry, buffer []byte) *File {
	file.Tensors = make([]Tensor, len(entries))
	for i := range entries {
		e := &entries[i]
		e.Data = buffer[e.begin:e.end:e.end]
		file.Tensors[i] = e.Tensor
	}
	return file
}

// headerEntry is a tensor of the header with its data offsets.
type headerEntry struct {
	Tensor
	begin, end int64
}

// parseHeader reads the header's tensors (and the metadata into file).
func parseHeader(header []byte, file *File) ([]headerEntry, error) {
	p := headerParser{dec: json.NewDecoder(bytes.NewReader(header))}
	p.dec.UseNumber()
	var entries []headerEntry
	seen := map[string]bool{}
	if err := p.delim('{'); err != nil {
		return nil, err
	}
	for p.dec.More() {
		key, err := p.str("", "header key")
		if err != nil {
			return nil, err
		}
		if seen[key] {
			return nil, formatErrorf(key, "appears twice in the header")
		}
		if key == "" {
			return nil, formatErrorf("", "a tensor has an empty name")
		}
		seen[key] = true
		if key == MetadataKey {
			if file.Metadata, err = p.metadata(); err != nil {
				return nil, err
			}
			continue
		}
		e := headerEntry{}
		e.Name = key
		if e.DType, e.Shape, e.begin, e.end, err = p.tensorInfo(key); err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	if err := p.delim('}'); err != nil {
		return nil, err
	}
	if _, err := p.dec.Token(); err != io.EOF {
		return nil, formatErrorf("", "header has content after its JSON object (only space padding may follow)")
	}
	return entries, nil
}

// layOut checks that the tensors' data offsets tile a data buffer of
// bufLen bytes exactly, in offset order, each as long as its dtype and
// shape need. entries come back in offset order.
func layOut(entries []headerEntry, bufLen int64) error {
	slices.SortStableFunc(entries, func(a, b headerEntry) int {
		if a.begin != b.begin {
			if a.begin < b.begin {
				return -1
			}
			return 1
		}
		// Zero-length tensors may share an offset with the next one.
		if a.end != b.end {
			if a.end < b.end {
				return -1
			}
			return 1
		}
		return 0
	})
	var next int64
	for i := range entries {
		e := &entries[i]
		if e.begin != next {
			if e.begin < next {
				return formatErrorf(e.Name, "data_offsets [%d, %d] overlap the previous tensor, which ends at %d", e.begin, e.end, next)
			}
			return formatErrorf(e.Name, "data_offsets [%d, %d] leave a gap after byte %d", e.begin, e.end, next)
		}
		if e.end < e.begin {
			return formatErrorf(e.Name, "data_offsets [%d, %d] end before they begin", e.begin, e.end)
		}
		if e.end > bufLen {
			return formatErrorf(e.Name, "data_offsets [%d, %d] run past the %d-byte data buffer", e.begin, e.end, bufLen)
		}
		n, err := byteLength(e.Name, e.DType, e.Shape)
		if err != nil {
			return err
		}
		if n != e.end-e.begin {
			return formatErrorf(e.Name, "%s%v needs %d bytes, data_offsets [%d, %d] hold %d", e.DType, e.Shape, n, e.begin, e.end, e.end-e.begin)
		}
		next = e.end
	}
	if next != bufLen {
		return formatErrorf("", "tensors cover %d bytes of the %d-byte data buffer", next, bufLen)
	}
	return nil
}

// headerParser walks the header's JSON tokens, so that duplicate keys,
// unknown fields and non-integer numbers are caught (encoding/json's
// Unmarshal would silently accept or coerce them).
type headerParser struct {
	dec *json.Decoder
}

func (p *headerParser) token(tensor, what string) (json.Token, error) {
	tok, err := p.dec.Token()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, formatErrorf(tensor, "header is not valid JSON at %s: %v", what, err)
	}
	return tok, nil
}

func (p *headerParser) delim(want json.Delim) error {
	tok, err := p.token("", "the top-level object")
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return formatErrorf("", "header: expected %q, found %v", string(want), tok)
	}
	return nil
}

func (p *headerParser) expectDelim(tensor, what string, want json.Delim) error {
	tok, err := p.token(tensor, what)
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return formatErrorf(tensor, "%s: expected %q, found %v", what, string(want), describe(tok))
	}
	return nil
}

func (p *headerParser) str(tensor, what string) (string, error) {
	tok, err := p.token(tensor, what)
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", formatErrorf(tensor, "%s: expected a string, found %v", what, describe(tok))
	}
	return s, nil
}

func (p *headerParser) nonNegativeInt(tensor, what string) (int64, error) {
	tok, err := p.token(tensor, what)
	if err != nil {
		return 0, err
	}
	num, ok := tok.(json.Number)
	if !ok {
		return 0, formatErrorf(tensor, "%s: expected an integer, found %v", what, describe(tok))
	}
	v, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil || v < 0 {
		return 0, formatErrorf(tensor, "%s: %s is not a non-negative 64-bit integer", what, num)
	}
	return v, nil
}

func (p *headerParser) intArray(tensor, what string) ([]int64, error) {
	if err := p.expectDelim(tensor, what, '['); err != nil {
		return nil, err
	}
	var out []int64
	for p.dec.More() {
		v, err := p.nonNegativeInt(tensor, what)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, p.expectDelim(tensor, what, ']')
}

func (p *headerParser) metadata() (map[string]string, error) {
	const what = MetadataKey
	if err := p.expectDelim("", what, '{'); err != nil {
		return nil, err
	}
	m := map[string]string{}
	for p.dec.More() {
		k, err := p.str("", what)
		if err != nil {
			return nil, err
		}
		if _, dup := m[k]; dup {
			return nil, formatErrorf("", "%s: key %q appears twice", what, k)
		}
		v, err := p.str("", fmt.Sprintf("%s[%q]", what, k))
		if err != nil {
			return nil, err
		}
		m[k] = v
	}
	return m, p.expectDelim("", what, '}')
}

func (p *headerParser) tensorInfo(name string) (dtype DType, shape []int64, begin, end int64, err error) {
	if err = p.expectDelim(name, "tensor info", '{'); err != nil {
		return
	}
	var haveDType, haveShape, haveOffsets bool
	for p.dec.More() {
		var field string
		if field, err = p.str(name, "tensor info field"); err != nil {
			return
		}
		switch field {
		case "dtype":
			if haveDType {
				err = formatErrorf(name, "dtype given twice")
				return
			}
			haveDType = true
			var s string
			if s, err = p.str(name, "dtype"); err != nil {
				return
			}
			dtype = DType(s)
			if dtype.Size() == 0 {
				err = formatErrorf(name, "unknown dtype %q", s)
				return
			}
		case "shape":
			if haveShape {
				err = formatErrorf(name, "shape given twice")
				return
			}
			haveShape = true
			if shape, err = p.intArray(name, "shape"); err != nil {
				return
			}
			if shape == nil {
				shape = []int64{}
			}
		case "data_offsets":
			if haveOffsets {
				err = formatErrorf(name, "data_offsets given twice")
				return
			}
			haveOffsets = true
			var offs []int64
			if offs, err = p.intArray(name, "data_offsets"); err != nil {
				return
			}
			if len(offs) != 2 {
				err = formatErrorf(name, "data_offsets has %d entries, want [begin, end]", len(offs))
				return
			}
			begin, end = offs[0], offs[1]
		default:
			err = formatErrorf(name, "unknown field %q in tensor info", field)
			return
		}
	}
	if err = p.expectDelim(name, "tensor info", '}'); err != nil {
		return
	}
	switch {
	case !haveDType:
		err = formatErrorf(name, "tensor info lacks dtype")
	case !haveShape:
		err = formatErrorf(name, "tensor info lacks shape")
	case !haveOffsets:
		err = formatErrorf(name, "tensor info lacks data_offsets")
	}
	return
}

func describe(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		return strconv.Quote(v.String())
	case string:
		return "string " + strconv.Quote(v)
	case json.Number:
		return "number " + string(v)
	case bool:
		return "boolean " + strconv.FormatBool(v)
	case nil:
		return "null"
	}
	return fmt.Sprint(tok)
}
