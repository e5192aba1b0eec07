package ir

import (
	"fmt"
	"math"
	"slices"

	"github.com/dstune/dstune/onnx"
)

// The ai.onnx.ml domain: LabelEncoder, TreeEnsemble, Binarizer,
// ArrayFeatureExtractor.

const mlDomain = "ai.onnx.ml"

func init() {
	registerOp(mlDomain, "LabelEncoder", importLabelEncoder)
	registerOp(mlDomain, "TreeEnsemble", importTreeEnsemble)
	registerOp(mlDomain, "Binarizer", importBinarizer)
	registerOp(mlDomain, "ArrayFeatureExtractor", importArrayFeatureExtractor)
	// A LabelEncoder that produces strings needs its input at import.
	registerStaticOperandsFunc(mlDomain, "LabelEncoder", func(n *onnx.Node) []int {
		if n.Attr("values_strings") != nil || n.Attr("classes_strings") != nil {
			return []int{0}
		}
		if t, err := n.AttrTensor("values_tensor"); err == nil && t != nil && t.DataType == onnx.String {
			return []int{0}
		}
		return nil
	})
}

// ---------------------------------------------------------------- Binarizer

// importBinarizer is Y = X > threshold ? 1 : 0 (NaN gives 0), as Where.
func importBinarizer(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	threshold, err := n.AttrFloat("threshold", 0)
	if err != nil {
		return nil, err
	}
	if !isComputable(x.DType) {
		return nil, fmt.Errorf("X is %s, want a number type", x.DType)
	}
	above, err := im.emit1(&Binary{Fn: Greater}, x, im.constant(filled(x.DType, Shape{}, float64(threshold))))
	if err != nil {
		return nil, err
	}
	return one(im.emit1(&Where{}, above, im.constant(filled(x.DType, Shape{}, 1)), im.constant(filled(x.DType, Shape{}, 0))))
}

// ---------------------------------------------------------------- ArrayFeatureExtractor

// importArrayFeatureExtractor gathers the columns Y (flattened) of X's
// last axis; a 1-D X gives one row ([1, len(Y)]).
func importArrayFeatureExtractor(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	x, y := in[0], in[1]
	if len(x.Shape) == 0 {
		return nil, fmt.Errorf("X is a scalar, want at least one axis")
	}
	if y.DType != Int64 {
		return nil, fmt.Errorf("Y is %s, want int64", y.DType)
	}
	idx, err := im.reshape(y, Shape{y.Shape.Size()})
	if err != nil {
		return nil, err
	}
	z, err := im.emit1(&Gather{Axis: len(x.Shape) - 1}, x, idx)
	if err != nil {
		return nil, err
	}
	if len(x.Shape) == 1 {
		return one(im.reshape(z, Shape{1, y.Shape.Size()}))
	}
	return []*Value{z}, nil
}

// ---------------------------------------------------------------- LabelEncoder

// LabelEncoder maps every element of its input to the value of the equal
// key, or to Default. Float keys match NaN to NaN.
type LabelEncoder struct {
	Keys, Values *Tensor // 1-D, one value per key
	Default      *Tensor // one element of Values' dtype

	strIndex   map[string]int
	intIndex   map[int64]int
	floatIndex map[float64]int
	nanIndex   int // -1: no NaN key
}

func (op *LabelEncoder) Name() string  { return "LabelEncoder" }
func (op *LabelEncoder) foldsStrings() {}

// newLabelEncoder builds the lookup tables.
func newLabelEncoder(keys, values, def *Tensor) (*LabelEncoder, error) {
	if keys.Len() != values.Len() {
		return nil, fmt.Errorf("%d keys and %d values", keys.Len(), values.Len())
	}
	if def.dtype != values.dtype || def.Len() != 1 {
		return nil, fmt.Errorf("default %v for values of %s, want one %s", def, values.dtype, values.dtype)
	}
	op := &LabelEncoder{Keys: keys, Values: values, Default: def, nanIndex: -1}
	switch {
	case keys.dtype == String:
		op.strIndex = map[string]int{}
		for i, k := range keys.strs {
			op.strIndex[k] = i
		}
	case keys.dtype.IsInt():
		op.intIndex = map[int64]int{}
		for i := range keys.Len() {
			op.intIndex[keys.Int64At(i)] = i
		}
	case keys.dtype.IsFloat():
		op.floatIndex = map[float64]int{}
		for i := range keys.Len() {
			k := keys.Float64At(i)
			if math.IsNaN(k) {
				op.nanIndex = i
			} else {
				op.floatIndex[k] = i
			}
		}
	default:
		return nil, fmt.Errorf("keys of %s", keys.dtype)
	}
	return op, nil
}

func (op *LabelEncoder) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	if in[0].DType != op.Keys.dtype {
		return nil, fmt.Errorf("input is %s, the keys are %s", in[0].DType, op.Keys.dtype)
	}
	return []Type{{op.Values.dtype, in[0].Shape}}, nil
}

func (op *LabelEncoder) lookup(x *Tensor, i int) int {
	switch {
	case op.strIndex != nil:
		if j, ok := op.strIndex[x.strs[i]]; ok {
			return j
		}
	case op.intIndex != nil:
		if j, ok := op.intIndex[x.Int64At(i)]; ok {
			return j
		}
	default:
		v := x.Float64At(i)
		if math.IsNaN(v) {
			return op.nanIndex
		}
		if j, ok := op.floatIndex[v]; ok {
			return j
		}
	}
	return -1
}

func (op *LabelEncoder) Eval(in, out []*Tensor) error {
	x, y := in[0], out[0]
	es := y.dtype.Size()
	for i := range x.Len() {
		src, at := op.Default, 0
		if j := op.lookup(x, i); j >= 0 {
			src, at = op.Values, j
		}
		if y.dtype == String {
			y.strs[i] = src.strs[at]
		} else {
			copy(y.data[i*es:(i+1)*es], src.data[at*es:(at+1)*es])
		}
	}
	return nil
}

// labelAttr reads one of LabelEncoder's keys_* or values_* attribute
// families (floats, int64s, strings or tensor): nil when none is set.
func labelAttr(n *onnx.Node, prefix string) (*Tensor, error) {
	var found []*Tensor
	if a := n.Attr(prefix + "_floats"); a != nil {
		found = append(found, FromFloat32s(Shape{len(a.Floats)}, a.Floats))
	}
	if a := n.Attr(prefix + "_int64s"); a != nil {
		found = append(found, FromInt64s(Shape{len(a.Ints)}, a.Ints))
	}
	if a := n.Attr(prefix + "_strings"); a != nil {
		strs := make([]string, len(a.Strings))
		for i, s := range a.Strings {
			strs[i] = string(s)
		}
		found = append(found, FromStrings(Shape{len(strs)}, strs))
	}
	if t, err := n.AttrTensor(prefix + "_tensor"); err != nil {
		return nil, err
	} else if t != nil {
		x, err := TensorFromONNX(t)
		if err != nil {
			return nil, fmt.Errorf("%s_tensor: %w", prefix, err)
		}
		if len(x.shape) != 1 {
			return nil, fmt.Errorf("%s_tensor is %v, want 1-D", prefix, x)
		}
		found = append(found, x)
	}
	if len(found) > 1 {
		return nil, fmt.Errorf("more than one %s_* attribute", prefix)
	}
	if len(found) == 0 {
		return nil, nil
	}
	return found[0], nil
}

// labelDefault is the default value for values of dt: default_tensor, or
// the default_* attribute of the type, or its ONNX default (-1, -0.0,
// "_Unused").
func labelDefault(n *onnx.Node, dt DType) (*Tensor, error) {
	if t, err := n.AttrTensor("default_tensor"); err != nil {
		return nil, err
	} else if t != nil {
		x, err := TensorFromONNX(t)
		if err != nil {
			return nil, fmt.Errorf("default_tensor: %w", err)
		}
		if x.Len() != 1 || x.dtype != dt {
			return nil, fmt.Errorf("default_tensor is %v, want one %s", x, dt)
		}
		return x.Reshaped(Shape{}), nil
	}
	switch {
	case dt == String:
		s, err := n.AttrString("default_string", "_Unused")
		if err != nil {
			return nil, err
		}
		return FromStrings(Shape{}, []string{s}), nil
	case dt.IsInt():
		v, err := n.AttrInt("default_int64", -1)
		if err != nil {
			return nil, err
		}
		t := NewTensor(dt, Shape{})
		storeInt(t, 0, v, true, RoundUp)
		return t, nil
	case dt.IsFloat():
		v, err := n.AttrFloat("default_float", float32(math.Copysign(0, -1)))
		if err != nil {
			return nil, err
		}
		t := NewTensor(dt, Shape{})
		storeFloat(t, 0, float64(v), true, RoundUp)
		return t, nil
	}
	return nil, fmt.Errorf("values of %s", dt)
}

func importLabelEncoder(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	var keys, values *Tensor
	var err error
	if im.domainOpset(mlDomain) < 2 {
		keys, values, err = labelEncoderV1(n, in[0].DType)
	} else {
		if keys, err = labelAttr(n, "keys"); err != nil {
			return nil, err
		}
		if values, err = labelAttr(n, "values"); err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	if keys == nil || values == nil {
		return nil, fmt.Errorf("LabelEncoder needs keys_* and values_* attributes")
	}
	def, err := labelDefault(n, values.dtype)
	if err != nil {
		return nil, err
	}
	op, err := newLabelEncoder(keys, values, def)
	if err != nil {
		return nil, err
	}
	return one(im.emit1(op, in[0]))
}

// labelEncoderV1 is opset 1's form: classes_strings maps strings to their
// index, or indices to strings, depending on the input type.
func labelEncoderV1(n *onnx.Node, in DType) (keys, values *Tensor, err error) {
	a := n.Attr("classes_strings")
	if a == nil {
		return nil, nil, fmt.Errorf("LabelEncoder (ai.onnx.ml opset 1) needs classes_strings")
	}
	strs := make([]string, len(a.Strings))
	idx := make([]int64, len(a.Strings))
	for i, s := range a.Strings {
		strs[i], idx[i] = string(s), int64(i)
	}
	classes, indices := FromStrings(Shape{len(strs)}, strs), FromInt64s(Shape{len(idx)}, idx)
	if in == String {
		return classes, indices, nil
	}
	return indices, classes, nil
}

// ---------------------------------------------------------------- TreeEnsemble

// The comparison a tree node makes, as ai.onnx.ml numbers nodes_modes.
const (
	treeLEQ = iota
	treeLT
	treeGTE
	treeGT
	treeEQ
	treeNEQ
	treeMember
)

// The aggregate functions and post transforms of TreeEnsemble.
const (
	treeAverage = iota
	treeSum
	treeMin
	treeMax
)

const (
	postNone = iota
	postSoftmax
	postLogistic
	postSoftmaxZero
	postProbit
)

// TreeEnsemble evaluates an ensemble of decision trees on X [N, F]: each
// tree leads every row from its root through interior nodes (feature
// compared with a split value, or tested for membership in a set) to a
// leaf, whose weight is aggregated into its target; Y is [N, Targets],
// post-transformed.
type TreeEnsemble struct {
	Nodes     []treeNode
	Leaves    []treeLeaf
	Roots     []treeRef
	Targets   int
	Aggregate int
	Post      int
	features  int // the largest feature index + 1
}

type treeNode struct {
	mode            int
	feature         int
	split           float64
	members         []float64
	missingTrue     bool
	ifTrue, ifFalse treeRef
}

type treeLeaf struct {
	target int
	weight float64
}

// treeRef is a node or a leaf.
type treeRef struct {
	index int
	leaf  bool
}

func (op *TreeEnsemble) Name() string { return "TreeEnsemble" }

func (op *TreeEnsemble) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if !isFloat(x.DType) {
		return nil, fmt.Errorf("X is %s, want a float type", x.DType)
	}
	if len(x.Shape) != 2 {
		return nil, fmt.Errorf("X is %v, want [N, F]", x)
	}
	if op.features > x.Shape[1] {
		return nil, fmt.Errorf("the trees read feature %d, X has %d", op.features-1, x.Shape[1])
	}
	return []Type{{x.DType, Shape{x.Shape[0], op.Targets}}}, nil
}

func (op *TreeEnsemble) Eval(in, out []*Tensor) error {
	x, y := in[0], out[0]
	rows, cols := x.shape[0], x.shape[1]
	scores := make([]float64, op.Targets)
	for r := range rows {
		row := func(f int) float64 { return x.Float64At(r*cols + f) }
		for t := range scores {
			switch op.Aggregate {
			case treeMin:
				scores[t] = maxFiniteOf(x.dtype)
			case treeMax:
				scores[t] = -maxFiniteOf(x.dtype)
			default:
				scores[t] = 0
			}
		}
		for _, root := range op.Roots {
			leaf := op.Leaves[op.walk(root, row)]
			switch op.Aggregate {
			case treeSum:
				scores[leaf.target] += leaf.weight
			case treeAverage:
				scores[leaf.target] += leaf.weight / float64(len(op.Roots))
			case treeMin:
				scores[leaf.target] = math.Min(scores[leaf.target], leaf.weight)
			case treeMax:
				scores[leaf.target] = math.Max(scores[leaf.target], leaf.weight)
			}
		}
		postTransform(op.Post, scores)
		for t, v := range scores {
			storeFloat(y, r*op.Targets+t, v, true, RoundUp)
		}
	}
	return nil
}

// walk follows a row from ref to its leaf (the trees were checked to be
// acyclic).
func (op *TreeEnsemble) walk(ref treeRef, row func(int) float64) int {
	for !ref.leaf {
		nd := &op.Nodes[ref.index]
		v := row(nd.feature)
		var hit bool
		switch nd.mode {
		case treeLEQ:
			hit = v <= nd.split
		case treeLT:
			hit = v < nd.split
		case treeGTE:
			hit = v >= nd.split
		case treeGT:
			hit = v > nd.split
		case treeEQ:
			hit = v == nd.split
		case treeNEQ:
			hit = v != nd.split
		case treeMember:
			hit = slices.Contains(nd.members, v)
		}
		if hit || nd.missingTrue && math.IsNaN(v) {
			ref = nd.ifTrue
		} else {
			ref = nd.ifFalse
		}
	}
	return ref.index
}

func postTransform(post int, s []float64) {
	switch post {
	case postSoftmax, postSoftmaxZero:
		m := math.Inf(-1)
		for _, v := range s {
			if post == postSoftmax || v != 0 {
				m = math.Max(m, v)
			}
		}
		sum := 0.0
		for i, v := range s {
			if post == postSoftmaxZero && v == 0 {
				continue
			}
			s[i] = math.Exp(v - m)
			sum += s[i]
		}
		for i := range s {
			if post == postSoftmax || s[i] != 0 {
				s[i] /= sum
			}
		}
	case postLogistic:
		for i, v := range s {
			s[i] = 1 / (1 + math.Exp(-v))
		}
	case postProbit:
		for i, v := range s {
			s[i] = math.Sqrt2 * math.Erfinv(2*v-1)
		}
	}
}

// maxFiniteOf is the largest finite value of float type dt.
func maxFiniteOf(dt DType) float64 {
	switch dt {
	case Float64:
		return math.MaxFloat64
	case Float16:
		return 65504
	case BFloat16:
		return float64(BFloat16ToFloat32(0x7f7f))
	}
	return math.MaxFloat32
}

// attrFloats reads a FLOATS attribute or a 1-D float TENSOR attribute (the
// form TreeEnsemble uses) as float64s; nil when absent.
func attrFloats(n *onnx.Node, name string) ([]float64, error) {
	a := n.Attr(name)
	if a == nil {
		return nil, nil
	}
	switch a.Type {
	case onnx.AttrFloats:
		out := make([]float64, len(a.Floats))
		for i, v := range a.Floats {
			out[i] = float64(v)
		}
		return out, nil
	case onnx.AttrTensor:
		t, err := TensorFromONNX(a.T)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if t.dtype == String {
			return nil, fmt.Errorf("%s holds strings, want numbers", name)
		}
		out := make([]float64, t.Len())
		for i := range out {
			out[i] = t.Float64At(i)
		}
		return out, nil
	}
	return nil, fmt.Errorf("attribute %s is %s, want FLOATS or TENSOR", name, a.Type)
}

func importTreeEnsemble(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	ints := func(name string) ([]int, error) {
		v, _, err := attrInts(n, name)
		return v, err
	}
	var (
		featureIDs, trueIDs, falseIDs, trueLeafs, falseLeafs, targetIDs, roots []int
		splits, modes, weights, members, missing                               []float64
		err                                                                    error
	)
	for _, a := range []struct {
		name string
		dst  *[]int
	}{{"nodes_featureids", &featureIDs}, {"nodes_truenodeids", &trueIDs}, {"nodes_falsenodeids", &falseIDs},
		{"nodes_trueleafs", &trueLeafs}, {"nodes_falseleafs", &falseLeafs}, {"leaf_targetids", &targetIDs}, {"tree_roots", &roots}} {
		if *a.dst, err = ints(a.name); err != nil {
			return nil, err
		}
	}
	for _, a := range []struct {
		name string
		dst  *[]float64
	}{{"nodes_splits", &splits}, {"nodes_modes", &modes}, {"leaf_weights", &weights}, {"membership_values", &members}} {
		if *a.dst, err = attrFloats(n, a.name); err != nil {
			return nil, err
		}
	}
	if v, ok, err := attrInts(n, "nodes_missing_value_tracks_true"); err != nil {
		return nil, err
	} else if ok {
		missing = make([]float64, len(v))
		for i, x := range v {
			missing[i] = float64(x)
		}
	}
	nNodes := len(featureIDs)
	for name, l := range map[string]int{"nodes_truenodeids": len(trueIDs), "nodes_falsenodeids": len(falseIDs), "nodes_trueleafs": len(trueLeafs),
		"nodes_falseleafs": len(falseLeafs), "nodes_splits": len(splits), "nodes_modes": len(modes)} {
		if l != nNodes {
			return nil, fmt.Errorf("%s has %d entries for %d nodes", name, l, nNodes)
		}
	}
	if missing != nil && len(missing) != nNodes {
		return nil, fmt.Errorf("nodes_missing_value_tracks_true has %d entries for %d nodes", len(missing), nNodes)
	}
	if len(targetIDs) != len(weights) {
		return nil, fmt.Errorf("%d leaf targets and %d leaf weights", len(targetIDs), len(weights))
	}
	targets, err := attrInt(n, "n_targets", 0)
	if err != nil {
		return nil, err
	}
	if targets < 1 || targets > 1<<20 {
		return nil, fmt.Errorf("n_targets %d", targets)
	}
	op := &TreeEnsemble{Targets: targets, Nodes: make([]treeNode, nNodes), Leaves: make([]treeLeaf, len(weights))}
	if op.Aggregate, err = attrInt(n, "aggregate_function", treeSum); err != nil {
		return nil, err
	}
	if op.Post, err = attrInt(n, "post_transform", postNone); err != nil {
		return nil, err
	}
	if op.Aggregate < treeAverage || op.Aggregate > treeMax || op.Post < postNone || op.Post > postProbit {
		return nil, fmt.Errorf("aggregate_function %d or post_transform %d out of range", op.Aggregate, op.Post)
	}
	for i := range op.Leaves {
		if targetIDs[i] < 0 || targetIDs[i] >= targets {
			return nil, fmt.Errorf("leaf %d targets %d of %d", i, targetIDs[i], targets)
		}
		op.Leaves[i] = treeLeaf{target: targetIDs[i], weight: weights[i]}
	}
	ref := func(id, leaf int) (treeRef, error) {
		r := treeRef{index: id, leaf: leaf != 0}
		if limit := map[bool]int{true: len(op.Leaves), false: nNodes}[r.leaf]; id < 0 || id >= limit {
			return r, fmt.Errorf("reference to %d of %d", id, limit)
		}
		return r, nil
	}
	nextMember := 0
	for i := range op.Nodes {
		nd := &op.Nodes[i]
		nd.mode, nd.feature, nd.split = int(modes[i]), featureIDs[i], splits[i]
		if nd.mode < treeLEQ || nd.mode > treeMember || float64(nd.mode) != modes[i] {
			return nil, fmt.Errorf("node %d: mode %v", i, modes[i])
		}
		if nd.feature < 0 || nd.feature >= maxTensorBytes {
			return nil, fmt.Errorf("node %d: feature %d", i, nd.feature)
		}
		op.features = max(op.features, nd.feature+1)
		nd.missingTrue = missing != nil && missing[i] != 0
		if nd.ifTrue, err = ref(trueIDs[i], trueLeafs[i]); err != nil {
			return nil, fmt.Errorf("node %d true branch: %w", i, err)
		}
		if nd.ifFalse, err = ref(falseIDs[i], falseLeafs[i]); err != nil {
			return nil, fmt.Errorf("node %d false branch: %w", i, err)
		}
		if nd.mode == treeMember {
			// The sets, in the order of the member nodes, end at NaN.
			for nextMember < len(members) && !math.IsNaN(members[nextMember]) {
				nd.members = append(nd.members, members[nextMember])
				nextMember++
			}
			if nextMember == len(members) {
				return nil, fmt.Errorf("node %d: membership_values has no NaN-terminated set for it", i)
			}
			nextMember++
		}
	}
	for _, r := range roots {
		root, err := ref(r, 0)
		if err != nil {
			return nil, fmt.Errorf("tree root: %w", err)
		}
		// A root whose branches are one leaf is that leaf.
		if nd := op.Nodes[r]; nd.ifTrue.leaf && nd.ifFalse.leaf && nd.ifTrue.index == nd.ifFalse.index {
			root = nd.ifTrue
		}
		op.Roots = append(op.Roots, root)
	}
	if err := op.checkAcyclic(); err != nil {
		return nil, err
	}
	return one(im.emit1(op, in[0]))
}

// checkAcyclic refuses trees whose nodes lead back to themselves (a walk
// would never end).
func (op *TreeEnsemble) checkAcyclic() error {
	state := make([]uint8, len(op.Nodes)) // 0 new, 1 on the path, 2 done
	var visit func(r treeRef) error
	visit = func(r treeRef) error {
		if r.leaf || state[r.index] == 2 {
			return nil
		}
		if state[r.index] == 1 {
			return fmt.Errorf("the trees have a cycle through node %d", r.index)
		}
		state[r.index] = 1
		nd := op.Nodes[r.index]
		if err := visit(nd.ifTrue); err != nil {
			return err
		}
		if err := visit(nd.ifFalse); err != nil {
			return err
		}
		state[r.index] = 2
		return nil
	}
	for _, r := range op.Roots {
		if err := visit(r); err != nil {
			return err
		}
	}
	return nil
}
