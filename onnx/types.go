package onnx

// The types below mirror onnx.proto (v1.22.0) closely enough to read and
// write every model dstune meets, while keeping tensor bytes as views of the
// file: Tensor.Raw aliases the buffer the model was decoded from (or the
// external-data file), it is never copied. Field names follow the proto's,
// in Go spelling.

// DataType is TensorProto.DataType.
type DataType int32

const (
	Undefined      DataType = 0
	Float          DataType = 1
	Uint8          DataType = 2
	Int8           DataType = 3
	Uint16         DataType = 4
	Int16          DataType = 5
	Int32          DataType = 6
	Int64          DataType = 7
	String         DataType = 8
	Bool           DataType = 9
	Float16        DataType = 10
	Double         DataType = 11
	Uint32         DataType = 12
	Uint64         DataType = 13
	Complex64      DataType = 14
	Complex128     DataType = 15
	BFloat16       DataType = 16
	Float8E4M3FN   DataType = 17
	Float8E4M3FNUZ DataType = 18
	Float8E5M2     DataType = 19
	Float8E5M2FNUZ DataType = 20
	Uint4          DataType = 21
	Int4           DataType = 22
	Float4E2M1     DataType = 23
	Float8E8M0     DataType = 24
	Uint2          DataType = 25
	Int2           DataType = 26
)

// Model is ModelProto.
type Model struct {
	IRVersion       int64
	OpsetImports    []OpsetID
	ProducerName    string
	ProducerVersion string
	Domain          string
	ModelVersion    int64
	DocString       string
	Graph           *Graph
	MetadataProps   []StringPair
	// Functions are the model-local functions (FunctionProto): a node
	// whose domain and op type name one is a call of it.
	Functions []*Function

	// Path is the file the model was read from ("" when decoded from
	// memory); Dir is the directory external data is resolved against.
	Path string
	Dir  string

	// buf is the buffer the model was decoded from; resources release the
	// memory mappings behind buf and external data (see Close).
	buf       []byte
	resources []func() error
	mapped    [][]byte // the file mappings among buf and external data
}

// Function is FunctionProto: a named graph of nodes that nodes of the
// model (and of other functions) call like an operator. Its inputs and
// outputs are the formal names its nodes read and write; a node attribute
// with RefAttrName takes the value of the caller's attribute of that name
// (or the default in AttributeDefaults, or is absent).
type Function struct {
	Name, Domain, Overload string
	Inputs, Outputs        []string
	Attributes             []string     // attributes without a default
	AttributeDefaults      []*Attribute // attributes with one
	Nodes                  []*Node
	OpsetImports           []OpsetID
	DocString              string
}

// Function returns the model-local function named domain and name (and
// overload), or nil.
func (m *Model) Function(domain, name, overload string) *Function {
	for _, f := range m.Functions {
		if f.Domain == domain && f.Name == name && f.Overload == overload {
			return f
		}
	}
	return nil
}

// OpsetID is OperatorSetIdProto; Domain "" (or "ai.onnx") is the default.
type OpsetID struct {
	Domain  string
	Version int64
}

// StringPair is StringStringEntryProto.
type StringPair struct {
	Key, Value string
}

// Graph is GraphProto.
type Graph struct {
	Name         string
	Nodes        []*Node
	Initializers []*Tensor
	DocString    string
	Inputs       []*ValueInfo
	Outputs      []*ValueInfo
	ValueInfo    []*ValueInfo
}

// Node is NodeProto. An empty input name is an omitted optional input.
type Node struct {
	Name       string
	OpType     string
	Domain     string
	Inputs     []string
	Outputs    []string
	Attributes []*Attribute
	DocString  string
}

// AttributeType is AttributeProto.AttributeType.
type AttributeType int32

const (
	AttrUndefined     AttributeType = 0
	AttrFloat         AttributeType = 1
	AttrInt           AttributeType = 2
	AttrString        AttributeType = 3
	AttrTensor        AttributeType = 4
	AttrGraph         AttributeType = 5
	AttrFloats        AttributeType = 6
	AttrInts          AttributeType = 7
	AttrStrings       AttributeType = 8
	AttrTensors       AttributeType = 9
	AttrGraphs        AttributeType = 10
	AttrSparseTensor  AttributeType = 11
	AttrSparseTensors AttributeType = 12
	AttrTypeProto     AttributeType = 13
	AttrTypeProtos    AttributeType = 14
)

// Attribute is AttributeProto; which value field is meaningful depends on
// Type.
type Attribute struct {
	Name        string
	Type        AttributeType
	RefAttrName string
	DocString   string
	F           float32
	I           int64
	S           []byte
	T           *Tensor
	G           *Graph
	TP          *Type
	Floats      []float32
	Ints        []int64
	Strings     [][]byte
	Tensors     []*Tensor
	Graphs      []*Graph
	TPs         []*Type

	// Sparse and SparseTensors hold SPARSE_TENSOR(S) values.
	Sparse        *SparseTensor
	SparseTensors []*SparseTensor
}

// SparseTensor is SparseTensorProto: Values holds the non-zero values
// (1-D, NNZ), Indices their positions (int64 [NNZ, rank] or linearized
// [NNZ]), Dims the dense shape.
type SparseTensor struct {
	Values  *Tensor
	Indices *Tensor
	Dims    []int64
}

// Tensor is TensorProto. Exactly one representation holds the values: Raw
// (little-endian bytes, a view of the model file or external-data file,
// never to be written through) or one of the typed repeated fields, as the
// proto stores them (e.g. float16/bfloat16/int8/uint8/bool/int16 values in
// Int32Data, one element per entry).
type Tensor struct {
	Name      string
	DataType  DataType
	Dims      []int64
	DocString string

	Raw        []byte
	FloatData  []float32
	Int32Data  []int32
	StringData [][]byte
	Int64Data  []int64
	DoubleData []float64
	Uint64Data []uint64

	// External is set when the values live in an external-data file; Raw
	// then holds the bytes read (or mapped) from it.
	External *ExternalData

	// RawOffset is the byte offset of Raw inside the model file when Raw is
	// a view of it (-1 otherwise): in-place patching writes there.
	RawOffset int64
}

// ExternalData is the resolved external_data of a tensor.
type ExternalData struct {
	Location string // as written in the model, relative to the model's directory
	Offset   int64
	Length   int64
	Checksum string
}

// ValueInfo is ValueInfoProto.
type ValueInfo struct {
	Name      string
	Type      *Type
	DocString string
}

// TypeKind says which TypeProto oneof is set.
type TypeKind int

const (
	TypeUnknown TypeKind = iota
	TypeTensor
	TypeSequence
	TypeMap
	TypeOptional
	TypeSparseTensor
)

// Type is TypeProto. For tensors ElemType and Shape are set (Shape nil means
// the rank is unknown); for sequences and optionals Elem is the element
// type; for maps KeyType and Elem.
type Type struct {
	Kind       TypeKind
	ElemType   DataType
	Shape      []Dim
	HasShape   bool
	Elem       *Type
	KeyType    DataType
	Denotation string
}

// Dim is TensorShapeProto.Dimension: a fixed size, a symbolic name, or
// neither (unknown).
type Dim struct {
	Value      int64
	Param      string
	HasValue   bool
	Denotation string
}
