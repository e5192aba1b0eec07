package ir

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/dstune/dstune/internal/sysmem"
	"github.com/dstune/dstune/onnx"
)

// ErrNotSupported marks models, ops, attributes and dtypes dstune cannot
// import; errors wrapping it say which.
var ErrNotSupported = errors.New("not supported")

// Model is an ONNX model prepared for import: its initializers converted
// once, so that every specialization to input shapes shares the same
// parameter tensors.
type Model struct {
	ONNX  *onnx.Model
	Opset int
	// Params are the floating-point initializers the import does not
	// read (see convertInitializers), in file order: what training may
	// change.
	Params []*Param
	// Inputs are the graph inputs that are not initializers.
	Inputs []InputInfo
	// Outputs are the graph output names.
	Outputs []string
	// Initializers lists every initializer (parameters and constants), in
	// file order, for listings.
	Initializers []InitializerInfo
	// Skipped lists the initializers left out: of a type dstune does not
	// support (complex numbers), and read by nothing.
	Skipped []SkippedInitializer

	consts map[string]*Tensor // the initializers that are not parameters

	// float32Compute: see Float32Compute; halfParams the converted
	// parameters' stored dtypes.
	float32Compute bool
	halfParams     map[string]DType
}

// InputInfo is a graph input as the model declares it: a tensor, or a
// sequence or optional (Kind) of Elem.
type InputInfo struct {
	Name  string
	Kind  DatumKind
	DType DType
	// Dims are the declared dimensions, -1 where dynamic; DimNames the
	// symbolic names ("batch") of the dynamic ones. Dims is nil when the
	// model does not declare a rank.
	Dims     []int
	DimNames []string
	// Elem is what a sequence holds or an optional may hold (nil when the
	// model does not say).
	Elem *InputInfo
}

// InitializerInfo describes one initializer of the model.
type InitializerInfo struct {
	Name  string
	DType DType
	Shape Shape
	// Param: a floating-point initializer the import does not read, i.e.
	// a trainable parameter.
	Param bool
	// ReadAtImport: a floating-point initializer whose value the import
	// needs (it flows into Resize's scales, Dropout's ratio, ...): a
	// constant, never trained, whatever else reads it.
	ReadAtImport bool
}

// SkippedInitializer is an initializer import left out (see
// Model.Skipped).
type SkippedInitializer struct {
	Name string
	Type string // the ONNX data type ("COMPLEX64")
	Dims []int64
}

// NewModel converts the initializers of m and checks its inputs; it does
// not look at the nodes yet (Specialize does). The model's tensors are
// copies: they stay valid after m is closed, and writing them leaves m's
// bytes alone.
func NewModel(m *onnx.Model) (*Model, error) { return newModel(m, false) }

// NewModelShared is NewModel without copying the initializers where their
// stored bytes can be used as they are (every dtype of a byte or more
// except bool, at an address aligned to the element size): a model of
// gigabytes then imports in milliseconds and takes no memory beyond the
// file's pages actually read. The tensors view m's bytes: they are valid
// only until m is closed, and writes to them (applying a delta in memory)
// change what m's tensors hold, never the file on disk (large files are
// mapped copy-on-write).
func NewModelShared(m *onnx.Model) (*Model, error) { return newModel(m, true) }

func newModel(m *onnx.Model, share bool) (*Model, error) {
	if m.Graph == nil {
		return nil, fmt.Errorf("ir: model has no graph")
	}
	for _, o := range m.OpsetImports {
		// ONNX's opsets count up from 1 (27 in 2026); anything far beyond
		// is a damaged file, not a newer standard.
		if o.Version < 0 || o.Version > 10000 {
			return nil, fmt.Errorf("ir: the model imports opset %d of domain %q, which is no opset", o.Version, o.Domain)
		}
	}
	opset := int(m.Opset(""))
	if opset == 0 && usesDefaultDomain(m.Graph) {
		return nil, fmt.Errorf("ir: model imports no default-domain opset but uses default-domain operators")
	}
	if len(m.Graph.Outputs) == 0 {
		return nil, fmt.Errorf("ir: the graph declares no outputs: there is nothing to compute")
	}
	out := &Model{ONNX: m, Opset: opset, consts: map[string]*Tensor{}}
	if err := out.convertInitializers(share); err != nil {
		return nil, err
	}
	inits := map[string]*onnx.Tensor{}
	for _, it := range m.Graph.Initializers {
		inits[it.Name] = it
	}
	for _, vi := range m.Graph.Inputs {
		if it := inits[vi.Name]; it != nil {
			// IR < 4 lists initializers as inputs too; from IR 4 an
			// initializer that is also an input is the input's default,
			// which dstune always uses. Either way the declared type
			// must be the initializer's.
			if err := checkInitializerInput(vi, it); err != nil {
				return nil, err
			}
			continue
		}
		info, err := inputInfo(vi)
		if err != nil {
			return nil, fmt.Errorf("ir: input %q: %w", vi.Name, err)
		}
		out.Inputs = append(out.Inputs, info)
	}
	for _, vi := range m.Graph.Outputs {
		out.Outputs = append(out.Outputs, vi.Name)
	}
	return out, nil
}

// convertInitializers converts the initializers of m.ONNX into m's
// parameters and constants, in file order.
//
// A float initializer is a parameter unless the import needs its value:
// one that flows into an operand that must be known at import (Resize's
// scales, Dropout's ratio, a float Range's start, ...; see
// registerStaticOperands), in the main graph, in a subgraph or through a
// call of a model-local function, is a constant, as the Constant node an
// exporter would otherwise write. One read both that way and by trainable
// operands (a MatMul) is a constant too, for all its uses: training it
// would change a value that decided shapes or attributes at import, and
// the trained model would no longer be the one imported, so it is frozen.
//
// An initializer of a type dstune does not support (complex numbers) that
// nothing reads is left out and listed in Skipped; one that is read
// fails the import.
func (m *Model) convertInitializers(share bool) error {
	g := m.ONNX.Graph
	static := importTimeNames(m.ONNX, m.Opset)
	var read map[string]bool // the names g's nodes and outputs read, when needed
	seen := map[string]bool{}
	for _, it := range g.Initializers {
		if seen[it.Name] {
			return fmt.Errorf("ir: initializer %q is defined twice", it.Name)
		}
		seen[it.Name] = true
		if skippableDType(it.DataType) {
			if read == nil {
				read = namesRead(g)
			}
			if !read[it.Name] {
				m.Skipped = append(m.Skipped, SkippedInitializer{Name: it.Name, Type: it.DataType.String(), Dims: it.Dims})
				continue
			}
			return fmt.Errorf("ir: initializer %q: %w: %s tensors (the graph reads it; one nothing reads is left out)", it.Name, ErrNotSupported, it.DataType)
		}
		t, err := tensorFromONNX(it, share)
		if err != nil {
			return fmt.Errorf("ir: initializer %w", err)
		}
		isStatic := t.dtype.IsFloat() && static[it.Name]
		param := t.dtype.IsFloat() && !isStatic
		m.Initializers = append(m.Initializers, InitializerInfo{Name: it.Name, DType: t.dtype, Shape: t.shape, Param: param, ReadAtImport: isStatic})
		if param {
			m.Params = append(m.Params, &Param{Name: it.Name, Tensor: t})
		} else {
			m.consts[it.Name] = t
		}
	}
	if share {
		m.unshareOverlaps()
	}
	return nil
}

// unshareOverlaps gives its own copy to every initializer whose bytes,
// viewed in place (NewModelShared), overlap another's: two initializers
// whose external data name the same bytes (what an exporter that
// deduplicates tied weights writes, and ONNX allows) would otherwise be
// one memory, and a delta written into one would change the other. The
// first of each overlapping group, in file order, keeps the view.
func (m *Model) unshareOverlaps() {
	type span struct {
		lo, hi uintptr
		t      *Tensor
	}
	params := make(map[string]*Tensor, len(m.Params))
	for _, p := range m.Params {
		params[p.Name] = p.Tensor
	}
	var spans []span
	for _, it := range m.Initializers {
		t := m.consts[it.Name]
		if p := params[it.Name]; p != nil {
			t = p
		}
		if t == nil || len(t.data) == 0 {
			continue
		}
		lo := uintptr(unsafe.Pointer(&t.data[0]))
		spans = append(spans, span{lo, lo + uintptr(len(t.data)), t})
	}
	// In file order within one start address: the stable sort keeps the
	// first initializer of a group first.
	slices.SortStableFunc(spans, func(a, b span) int { return cmp.Compare(a.lo, b.lo) })
	var end uintptr // the end of the views kept so far
	for _, s := range spans {
		if s.lo < end {
			own := AlignedBytes(len(s.t.data))
			copy(own, s.t.data)
			s.t.data = own
			continue
		}
		end = s.hi
	}
}

// skippableDType reports whether an initializer of type t may be left out
// when nothing reads it: a type ONNX defines and dstune does not support.
// Unknown codes and UNDEFINED are damage, reported whether read or not.
func skippableDType(t onnx.DataType) bool { return t == onnx.Complex64 || t == onnx.Complex128 }

// namesRead returns the names the nodes of g read (their inputs and what
// their subgraphs read of the outer scope) and its outputs.
func namesRead(g *onnx.Graph) map[string]bool {
	read := map[string]bool{}
	for _, n := range g.Nodes {
		for _, name := range nodeInputsDeep(n) {
			read[name] = true
		}
	}
	for _, vi := range g.Outputs {
		read[vi.Name] = true
	}
	return read
}

// checkInitializerInput checks the type graph input vi declares for the
// initializer it of the same name: the element type, and the rank and
// every fixed dimension where vi declares them.
func checkInitializerInput(vi *onnx.ValueInfo, it *onnx.Tensor) error {
	t := vi.Type
	if t == nil || t.Kind == onnx.TypeUnknown {
		return nil
	}
	contradiction := func() error {
		return fmt.Errorf("ir: graph input %q declares %s, but its initializer %q is %s %s", vi.Name, declaredTypeText(t), it.Name, dataTypeText(it.DataType), dimsText(it.Dims))
	}
	if t.Kind != onnx.TypeTensor {
		return contradiction()
	}
	if t.ElemType != onnx.Undefined && t.ElemType != it.DataType {
		return contradiction()
	}
	if !t.HasShape && t.Shape == nil {
		return nil
	}
	if len(t.Shape) != len(it.Dims) {
		return contradiction()
	}
	for i, d := range t.Shape {
		if err := checkDeclaredDim(d, i); err != nil {
			return fmt.Errorf("ir: graph input %q: %w", vi.Name, err)
		}
		if d.HasValue && d.Value >= 0 && d.Value != it.Dims[i] {
			return contradiction()
		}
	}
	return nil
}

// declaredTypeText spells a declared type for messages: "float32 [5,
// batch]" ("?" for a dimension neither fixed nor named) or the kind of a
// non-tensor type.
func declaredTypeText(t *onnx.Type) string {
	switch t.Kind {
	case onnx.TypeTensor:
	case onnx.TypeSequence:
		return "a sequence"
	case onnx.TypeOptional:
		return "an optional"
	case onnx.TypeMap:
		return "a map"
	case onnx.TypeSparseTensor:
		return "a sparse tensor"
	default:
		return "no type"
	}
	text := dataTypeText(t.ElemType)
	if !t.HasShape && t.Shape == nil {
		return text + " of any shape"
	}
	dims := make([]string, len(t.Shape))
	for i, d := range t.Shape {
		switch {
		case d.HasValue:
			dims[i] = strconv.FormatInt(d.Value, 10)
		case d.Param != "":
			dims[i] = d.Param
		default:
			dims[i] = "?"
		}
	}
	return text + " [" + strings.Join(dims, ", ") + "]"
}

// dimsText spells stored dimensions as declaredTypeText does: "[3, 4]".
func dimsText(dims []int64) string {
	parts := make([]string, len(dims))
	for i, d := range dims {
		parts[i] = strconv.FormatInt(d, 10)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// dataTypeText names an ONNX data type as DType does ("float32"), or by
// its ONNX name where dstune has no DType for it ("complex64").
func dataTypeText(dt onnx.DataType) string {
	if d, err := DTypeFromONNX(dt); err == nil {
		return d.String()
	}
	return strings.ToLower(dt.String())
}

// usesDefaultDomain reports whether any node of g or its subgraphs is of
// the default ONNX domain.
func usesDefaultDomain(g *onnx.Graph) bool {
	for _, n := range g.Nodes {
		if n.Domain == "" || n.Domain == "ai.onnx" {
			return true
		}
		for _, a := range n.Attributes {
			if a.Type == onnx.AttrGraph && a.G != nil && usesDefaultDomain(a.G) {
				return true
			}
		}
	}
	return false
}

func inputInfo(vi *onnx.ValueInfo) (InputInfo, error) {
	if vi.Type == nil {
		return InputInfo{Name: vi.Name}, fmt.Errorf("no type declared")
	}
	return typeInfo(vi.Name, vi.Type)
}

// typeInfo describes the declared type t; the decoder bounds how deeply
// types nest.
func typeInfo(name string, t *onnx.Type) (InputInfo, error) {
	info := InputInfo{Name: name}
	switch t.Kind {
	case onnx.TypeTensor:
	case onnx.TypeSequence, onnx.TypeOptional:
		info.Kind = SequenceDatum
		if t.Kind == onnx.TypeOptional {
			info.Kind = OptionalDatum
		}
		if t.Elem != nil && t.Elem.Kind != onnx.TypeUnknown {
			elem, err := typeInfo(name, t.Elem)
			if err != nil {
				return info, err
			}
			info.Elem = &elem
		}
		return info, nil
	default:
		return info, fmt.Errorf("%w: inputs of map or sparse tensor type", ErrNotSupported)
	}
	dt, err := DTypeFromONNX(t.ElemType)
	if err != nil {
		return info, fmt.Errorf("%w: %w", ErrNotSupported, err)
	}
	info.DType = dt
	if t.HasShape || t.Shape != nil {
		info.Dims = make([]int, len(t.Shape))
		info.DimNames = make([]string, len(t.Shape))
		for i, d := range t.Shape {
			if err := checkDeclaredDim(d, i); err != nil {
				return info, err
			}
			if d.HasValue && d.Value >= 0 {
				info.Dims[i] = int(d.Value)
			} else {
				info.Dims[i] = -1
				info.DimNames[i] = d.Param
			}
		}
	}
	return info, nil
}

// checkDeclaredDim checks dimension i of a declared shape: a size, a
// symbolic name, nothing, or -1, which some converters write for a
// dimension they do not know (ONNX says to leave it unset); any other
// negative value is damage.
func checkDeclaredDim(d onnx.Dim, i int) error {
	if d.HasValue && d.Value < -1 {
		return fmt.Errorf("dimension %d is %d, want a size of 0 or more or a symbolic name", i, d.Value)
	}
	return nil
}

// Input returns the input called name, or nil.
func (m *Model) Input(name string) *InputInfo {
	for i := range m.Inputs {
		if m.Inputs[i].Name == name {
			return &m.Inputs[i]
		}
	}
	return nil
}

// Param returns the parameter called name, or nil.
func (m *Model) Param(name string) *Param {
	for _, p := range m.Params {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Bindings fix the graph inputs for one specialization: the shape of each
// tensor input, and optionally a value for inputs that must be known at
// import (ones that decide a shape, like a Reshape's target, and string
// inputs; see ValueInputs). Bound values become constants and are folded.
// Inputs of sequence or optional type are bound in Composites: the datum
// gives the structure, and each tensor element is a value (a Datum with a
// Tensor) or fed at run time (a Datum with only a Type) as the graph input
// ElementName(input, path...).
type Bindings struct {
	Shapes     map[string]Shape
	Values     map[string]*Tensor
	Composites map[string]*Datum
}

// FromONNX imports m specialized to the given input shapes (inputs whose
// declared shape is fully static may be left out).
func FromONNX(m *onnx.Model, shapes map[string]Shape) (*Graph, error) {
	model, err := NewModel(m)
	if err != nil {
		return nil, err
	}
	return model.Specialize(Bindings{Shapes: shapes})
}

// Specialize imports the model's nodes for concrete input shapes: it infers
// every value's static type, folds everything computable from constants
// (shape subgraphs above all), normalizes attributes, records parameter
// aliases and uses, and drops nodes that no output needs.
func (m *Model) Specialize(b Bindings) (*Graph, error) {
	im := &importer{
		model: m,
		opset: m.Opset,
		env:   map[string]*Value{},
		g:     &Graph{Name: m.ONNX.Graph.Name, Opset: m.Opset},
	}
	var stored int64
	for _, p := range m.Params {
		stored += int64(len(p.Tensor.data))
	}
	for _, t := range m.consts {
		stored += int64(len(t.data))
	}
	im.foldBudget = foldBudget(stored)
	for _, p := range m.Params {
		param := &Param{Name: p.Name, Tensor: p.Tensor}
		v := &Value{Name: p.Name, Type: Type{p.Tensor.dtype, p.Tensor.shape}, Kind: ParamValue, Param: param}
		param.Value = v
		im.g.Params = append(im.g.Params, param)
		im.env[p.Name] = v
	}
	for name, t := range m.consts {
		im.env[name] = &Value{Name: name, Type: Type{t.dtype, t.shape}, Kind: ConstValue, Const: t}
	}
	for name := range b.Shapes {
		if m.Input(name) == nil {
			return nil, fmt.Errorf("ir: shape given for %q, which is not an input of the model (inputs: %s)", name, m.inputNames())
		}
	}
	for name := range b.Values {
		if m.Input(name) == nil {
			return nil, fmt.Errorf("ir: value given for %q, which is not an input of the model (inputs: %s)", name, m.inputNames())
		}
	}
	for name := range b.Composites {
		if m.Input(name) == nil {
			return nil, fmt.Errorf("ir: datum given for %q, which is not an input of the model (inputs: %s)", name, m.inputNames())
		}
	}
	for _, in := range m.Inputs {
		var v *Value
		var err error
		if in.Kind == TensorDatum {
			v, err = bindInput(in, b)
		} else {
			v, err = im.bindComposite(in, b)
		}
		if err != nil {
			return nil, err
		}
		if v.Kind == GraphInput {
			im.g.Inputs = append(im.g.Inputs, v)
		}
		im.env[in.Name] = v
	}
	if err := im.graphNodes(m.ONNX.Graph); err != nil {
		return nil, err
	}
	for i, name := range m.Outputs {
		v, ok := im.env[name]
		if !ok {
			return nil, fmt.Errorf("ir: graph output %q is not produced by any node", name)
		}
		if err := m.checkDeclaredOutput(m.ONNX.Graph.Outputs[i], v); err != nil {
			return nil, err
		}
		r, err := im.result(name, v, nil)
		if err != nil {
			return nil, err
		}
		im.g.Results = append(im.g.Results, r)
	}
	if err := im.g.checkOutputNames(); err != nil {
		return nil, err
	}
	im.g.pruneDead()
	fuseGelu(im.g)
	im.g.relinkUses()
	if err := im.g.Validate(); err != nil {
		return nil, err
	}
	return im.g, nil
}

// checkDeclaredOutput checks the value v computed for graph output vi
// against the type vi declares: a tensor for a tensor, and its element
// type (float32 for a half-precision one in a Float32Compute import), as
// onnxruntime does. The declared shape is not held against the graph:
// it is often stale (a script fixed the inputs' batch and left the
// outputs' declared size), and onnxruntime only warns about it.
func (m *Model) checkDeclaredOutput(vi *onnx.ValueInfo, v *Value) error {
	t := vi.Type
	if t == nil || t.Kind != onnx.TypeTensor {
		return nil
	}
	if v.IsComposite() {
		return fmt.Errorf("ir: graph output %q is declared %s, but the graph computes %s", vi.Name, declaredTypeText(t), compositeKindName(v))
	}
	if t.ElemType != onnx.Undefined {
		want, err := DTypeFromONNX(t.ElemType)
		if err != nil {
			return fmt.Errorf("ir: graph output %q: %w: %w", vi.Name, ErrNotSupported, err)
		}
		if m.float32Compute && want.narrowFloat() {
			want = Float32
		}
		if v.DType != want {
			return fmt.Errorf("ir: graph output %q is declared %s, but the graph computes %s%v", vi.Name, declaredTypeText(t), v.DType, v.Shape)
		}
	}
	for i, d := range t.Shape {
		if err := checkDeclaredDim(d, i); err != nil {
			return fmt.Errorf("ir: graph output %q: %w", vi.Name, err)
		}
	}
	return nil
}

func (m *Model) inputNames() string {
	var names []string
	for _, in := range m.Inputs {
		names = append(names, in.Name)
	}
	return strings.Join(names, ", ")
}

func bindInput(in InputInfo, b Bindings) (*Value, error) {
	if _, ok := b.Composites[in.Name]; ok {
		return nil, fmt.Errorf("ir: input %q is a tensor: bind it in Values or Shapes, not Composites", in.Name)
	}
	if t, ok := b.Values[in.Name]; ok {
		if t.dtype != in.DType {
			return nil, fmt.Errorf("ir: input %q: value is %s, the model declares %s", in.Name, t.dtype, in.DType)
		}
		if err := checkDeclared(in, t.shape); err != nil {
			return nil, err
		}
		return &Value{Name: in.Name, Type: Type{t.dtype, t.shape}, Kind: ConstValue, Const: t}, nil
	}
	if in.DType == String {
		return nil, fmt.Errorf("ir: input %q is a string tensor: bind its value (strings are known at import)", in.Name)
	}
	shape, ok := b.Shapes[in.Name]
	if !ok {
		if in.Dims == nil {
			return nil, fmt.Errorf("ir: input %q: no shape given and the model declares none", in.Name)
		}
		shape = make(Shape, len(in.Dims))
		for i, d := range in.Dims {
			if d < 0 {
				return nil, fmt.Errorf("ir: input %q: dimension %d (%q) is dynamic: give the input's shape", in.Name, i, in.DimNames[i])
			}
			shape[i] = d
		}
	}
	if err := checkDeclared(in, shape); err != nil {
		return nil, err
	}
	return &Value{Name: in.Name, Type: Type{in.DType, shape.Clone()}, Kind: GraphInput}, nil
}

func checkDeclared(in InputInfo, shape Shape) error {
	if err := checkShape(shape, in.DType.Size(), maxTensorBytes); err != nil {
		return fmt.Errorf("ir: input %q: %w", in.Name, err)
	}
	if in.Dims == nil {
		return nil
	}
	if len(shape) != len(in.Dims) {
		return fmt.Errorf("ir: input %q: shape %v has rank %d, the model declares rank %d", in.Name, shape, len(shape), len(in.Dims))
	}
	for i, d := range in.Dims {
		if d >= 0 && shape[i] != d {
			return fmt.Errorf("ir: input %q: shape %v, the model declares dimension %d = %d", in.Name, shape, i, d)
		}
	}
	return nil
}

// importer carries the state of one specialization.
type importer struct {
	model *Model
	opset int
	env   map[string]*Value
	g     *Graph

	// the ONNX node being imported, for errors and naming
	origin  string
	node    *onnx.Node
	fresh   map[*Value]bool
	counter int

	// suffix is appended to the names of the values a subgraph imported
	// more than once defines ("@2" in a loop's third iteration), so that
	// value names stay unique; subgraphNodes counts the subgraph imports
	// and the nodes imported inside subgraphs, against maxSubgraphNodes,
	// and subgraphCounts the same by kind, for the message.
	suffix         string
	subgraphNodes  int
	subgraphCounts [numSubgraphKinds]subgraphCount

	// functionDepth is how deeply the model-local function calls being
	// imported nest; functionCalls counts the calls imported, naming the
	// values of each apart.
	functionDepth, functionCalls int

	// folded is the bytes of the constants computed so far (folding,
	// tables the importers build). All of them stay referenced until the
	// import ends, so together they are bounded, not only each by
	// maxFoldBytes (a few hundred bytes of ONNX could otherwise fold forty
	// 512 MiB tensors), by foldBudget.
	folded, foldBudget int64
	// constBytes is the bytes of the constants built by the node being
	// imported (constant), added to folded after it.
	constBytes int64
}

// foldBudget bounds the constants an import may compute for a model
// whose initializers take stored bytes: foldPerStoredByte times those (a
// quantized model's 4-bit weights dequantize to float32 at import, eight
// times their bytes, and a model may fold a transposed copy besides) and
// maxFoldBytes more (masks, positions, shapes), within the memory limit.
func foldBudget(stored int64) int64 {
	b := foldPerStoredByte*min(stored, 1<<40) + foldSlack
	if m := MemoryLimit(); m > 0 && m < b {
		b = m
	}
	return b
}

const foldPerStoredByte = 16

// foldSlack is what a model may fold beyond foldPerStoredByte times its
// initializers; tests lower it to see the factor.
var foldSlack int64 = maxFoldBytes

// addFolded counts bytes more of folded constants, failing when the total
// passes the budget.
func (im *importer) addFolded(bytes int64) error {
	im.folded += bytes
	if im.folded > im.foldBudget {
		return fmt.Errorf("the constants folded at import take %s with this node's, more than %s (%d times the model's initializers and 1 GiB, within the memory limit)", sysmem.Format(im.folded), sysmem.Format(im.foldBudget), foldPerStoredByte)
	}
	return nil
}

// maxSubgraphNodes bounds how many subgraphs and nodes in them one
// specialization may import (a loop of a billion iterations is refused,
// not unrolled); tests lower it.
var maxSubgraphNodes = 1 << 18

// graphNodes imports the nodes of g (the main graph or a subgraph) in
// topological order.
func (im *importer) graphNodes(g *onnx.Graph) error {
	order, err := topoOrder(g, im.env)
	if err != nil {
		return err
	}
	for _, i := range order {
		n := g.Nodes[i]
		if err := im.importNode(i, n); err != nil {
			return err
		}
	}
	return nil
}

// topoOrder orders the nodes so that every input is defined before use
// (stable: file order when the file is already sorted, as ONNX requires).
func topoOrder(g *onnx.Graph, env map[string]*Value) ([]int, error) {
	producer := map[string]int{}
	for i, n := range g.Nodes {
		for _, o := range n.Outputs {
			if o == "" {
				continue
			}
			if j, dup := producer[o]; dup {
				return nil, fmt.Errorf("ir: value %q is produced by node %d and node %d", o, j, i)
			}
			producer[o] = i
		}
	}
	state := make([]uint8, len(g.Nodes)) // 0 new, 1 visiting, 2 done
	var order []int
	var visit func(i int) error
	visit = func(i int) error {
		switch state[i] {
		case 1:
			return fmt.Errorf("ir: the graph has a cycle through node %d %q (%s)", i, g.Nodes[i].Name, g.Nodes[i].OpType)
		case 2:
			return nil
		}
		state[i] = 1
		for _, in := range nodeInputsDeep(g.Nodes[i]) {
			if j, ok := producer[in]; ok && j != i {
				if err := visit(j); err != nil {
					return err
				}
			}
		}
		state[i] = 2
		order = append(order, i)
		return nil
	}
	for i := range g.Nodes {
		if err := visit(i); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// nodeInputsDeep lists a node's inputs plus the other values it reads:
// the outer-scope names its subgraphs read, and the value a Gradient
// differentiates.
func nodeInputsDeep(n *onnx.Node) []string {
	ins := append([]string{}, n.Inputs...)
	if n.OpType == "Gradient" && n.Domain == trainingDomain {
		if y, err := n.AttrString("y", ""); err == nil && y != "" {
			ins = append(ins, y)
		}
	}
	for _, a := range n.Attributes {
		if a.Type == onnx.AttrGraph && a.G != nil {
			defined := map[string]bool{}
			for _, t := range a.G.Initializers {
				defined[t.Name] = true
			}
			for _, vi := range a.G.Inputs {
				defined[vi.Name] = true
			}
			for _, sn := range a.G.Nodes {
				for _, in := range nodeInputsDeep(sn) {
					if !defined[in] {
						ins = append(ins, in)
					}
				}
				for _, o := range sn.Outputs {
					defined[o] = true
				}
			}
		}
	}
	return ins
}

func (im *importer) importNode(index int, n *onnx.Node) error {
	im.node = n
	im.fresh = map[*Value]bool{}
	if n.OpType == "" {
		im.origin = fmt.Sprintf("node %d %q", index, n.Name)
		return im.errorf("empty op_type: the node names no operator")
	}
	im.origin = fmt.Sprintf("node %d %q (%s)", index, n.Name, n.OpType)
	var handler importFunc
	fn := im.localFunction(n)
	if fn != nil {
		handler = func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) { return im.callFunction(fn, n, in) }
	} else {
		var err error
		if handler, err = lookupImporter(n); err != nil {
			return im.errorf("%w", err)
		}
	}
	in := make([]*Value, len(n.Inputs))
	composites := fn != nil || takesComposites(n.Domain, n.OpType)
	for i, name := range n.Inputs {
		if name == "" {
			continue
		}
		v, ok := im.env[name]
		if !ok {
			return im.errorf("input %d %q is not defined by any earlier node, initializer or graph input", i, name)
		}
		if v.IsComposite() && !composites {
			return im.errorf("input %d %q is %s; %s takes tensors", i, name, compositeKindName(v), n.OpType)
		}
		in[i] = v
	}
	outer := im.constBytes // a function call's body nodes count their own
	im.constBytes = 0
	outs, err := handler(im, n, in)
	if err == nil {
		err = im.addFolded(im.constBytes)
	}
	im.constBytes = outer
	if ne := (*nestingError)(nil); errors.As(err, &ne) && im.functionDepth > 0 {
		return err // named by the graph's node the calls start from
	}
	if err != nil {
		return im.errorf("%w", err)
	}
	if len(outs) < len(n.Outputs) {
		// Optional outputs the op does not have in this form.
		for i := len(outs); i < len(n.Outputs); i++ {
			if n.Outputs[i] != "" {
				return im.errorf("output %d %q is not supported for this node", i, n.Outputs[i])
			}
		}
	}
	for i, name := range n.Outputs {
		if name == "" {
			continue
		}
		v := outs[i]
		if v == nil {
			return im.errorf("output %d %q is not produced", i, name)
		}
		if im.model.float32Compute {
			if err := upcastOutput(v); err != nil {
				return im.errorf("output %q: %w", name, err)
			}
		}
		if _, dup := im.env[name]; dup {
			return im.errorf("output %q redefines an existing value", name)
		}
		if im.fresh[v] {
			v.Name = name + im.suffix
			delete(im.fresh, v) // a second output naming the same value aliases it
		} else if v.Kind == ParamValue && !hasString(v.Param.Aliases, name) && v.Param.Name != name {
			v.Param.Aliases = append(v.Param.Aliases, name)
		}
		im.env[name] = v
	}
	return nil
}

func hasString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (im *importer) errorf(format string, args ...any) error {
	return fmt.Errorf("ir: %s: "+format, append([]any{im.origin}, args...)...)
}

// emit adds op applied to in as a node, or, when every present input is a
// constant, evaluates it now and returns constants (folding).
func (im *importer) emit(op Op, in ...*Value) ([]*Value, error) {
	types := make([]Type, len(in))
	allConst := true
	for i, v := range in {
		if v == nil {
			continue
		}
		types[i] = v.Type
		if v.Kind != ConstValue {
			allConst = false
		}
	}
	outTypes, err := op.Infer(types)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op.Name(), err)
	}
	if err := checkStrings(op, types, outTypes, allConst); err != nil {
		return nil, err
	}
	limit := int64(maxTensorBytes)
	if allConst {
		limit = maxFoldBytes
	}
	for i, t := range outTypes {
		if err := checkShape(t.Shape, t.DType.Size(), limit); err != nil {
			return nil, fmt.Errorf("%s: output %d: %w", op.Name(), i, err)
		}
	}
	outs := make([]*Value, len(outTypes))
	if allConst {
		var bytes int64
		for _, t := range outTypes {
			bytes += int64(t.Shape.Size()) * int64(t.DType.Size()) // each ≤ maxFoldBytes
		}
		if err := im.addFolded(bytes); err != nil {
			return nil, fmt.Errorf("folding %s: %w", op.Name(), err)
		}
		ins := make([]*Tensor, len(in))
		for i, v := range in {
			if v != nil {
				ins[i] = v.Const
			}
		}
		res := make([]*Tensor, len(outTypes))
		for i, t := range outTypes {
			res[i] = NewTensor(t.DType, t.Shape)
		}
		eval := op.Eval
		if stringDataPositions(op) != nil {
			eval = func(in, out []*Tensor) error { return evalMovingStrings(op, in, out) }
		}
		if err := eval(ins, res); err != nil {
			return nil, fmt.Errorf("folding %s: %w", op.Name(), err)
		}
		for i, t := range res {
			outs[i] = im.newValue(outTypes[i])
			outs[i].Kind = ConstValue
			outs[i].Const = t
		}
		return outs, nil
	}
	node := &Node{Name: im.node.Name, Op: op, Inputs: in, Origin: im.origin}
	for i, t := range outTypes {
		v := im.newValue(t)
		v.Producer = node
		outs[i] = v
	}
	node.Outputs = outs
	im.g.Nodes = append(im.g.Nodes, node)
	return outs, nil
}

func (im *importer) emit1(op Op, in ...*Value) (*Value, error) {
	outs, err := im.emit(op, in...)
	if err != nil {
		return nil, err
	}
	return outs[0], nil
}

func (im *importer) newValue(t Type) *Value {
	im.counter++
	base := "tmp"
	if im.node != nil && len(im.node.Outputs) > 0 && im.node.Outputs[0] != "" {
		base = im.node.Outputs[0]
	}
	v := &Value{Name: fmt.Sprintf("%s#%d", base, im.counter), Type: Type{t.DType, t.Shape.Clone()}}
	im.fresh[v] = true
	return v
}

// constant makes a constant value (not a node).
func (im *importer) constant(t *Tensor) *Value {
	// Counted here, checked once the node is imported (importNode): each
	// is bounded by maxFoldBytes already.
	im.constBytes += int64(t.shape.Size()) * int64(t.dtype.Size())
	v := im.newValue(Type{t.dtype, t.shape})
	v.Kind = ConstValue
	v.Const = t
	return v
}

// reshape returns v with a new shape (v itself when it already has it).
func (im *importer) reshape(v *Value, shape Shape) (*Value, error) {
	if v.Shape.Equal(shape) {
		return v, nil
	}
	return im.emit1(&Reshape{Shape: shape.Clone()}, v)
}

// constTensor returns the value of input i, which decides a shape or an
// attribute and so must be known at import.
func (im *importer) constTensor(in []*Value, i int, what string) (*Tensor, error) {
	if i >= len(in) || in[i] == nil {
		return nil, nil
	}
	v := in[i]
	if v.Kind != ConstValue {
		kind := "computed at run time"
		switch v.Kind {
		case GraphInput:
			kind = "a graph input; bind its value when specializing"
		case ParamValue:
			kind = "a parameter"
		}
		return nil, fmt.Errorf("input %d (%s, %q) must be known at import, but it is %s", i, what, v.Name, kind)
	}
	return v.Const, nil
}

func (im *importer) constInts(in []*Value, i int, what string) ([]int, bool, error) {
	t, err := im.constTensor(in, i, what)
	if err != nil || t == nil {
		return nil, false, err
	}
	if !t.dtype.IsInt() {
		return nil, false, fmt.Errorf("input %d (%s) is %s, want an integer type", i, what, t.dtype)
	}
	return t.Ints(), true, nil
}
