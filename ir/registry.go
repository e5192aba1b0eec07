package ir

import (
	"fmt"
	"sort"
	"strings"

	"github.com/dstune/dstune/onnx"
)

type importFunc func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error)

// importers maps an operator's key (opKey) to its import. Each op family's
// file registers its operators in an init function next to their import
// functions, so an op's parts are found by its name; the map is built
// before any init runs.
var importers = map[string]importFunc{}

// registerOp registers the import of ONNX operator opType of domain ("" is
// the default domain, also spelled "ai.onnx"). Registering a key twice is a
// programmer error.
func registerOp(domain, opType string, f importFunc) {
	key := opKey(domain, opType)
	if _, dup := importers[key]; dup {
		panic("ir: operator " + key + " registered twice")
	}
	importers[key] = f
}

// staticOperandsOf maps an operator's key to the input positions that
// must be known at import (see registerStaticOperands).
var staticOperandsOf = map[string][]int{}

// registerStaticOperands records which inputs of opType must be known at
// import because they decide an output shape or an attribute (Pad's pads,
// Resize's sizes, ...). Model.ValueInputs follows them back to the graph
// inputs a caller must bind as values.
func registerStaticOperands(domain, opType string, positions ...int) {
	key := opKey(domain, opType)
	if _, dup := staticOperandsOf[key]; dup {
		panic("ir: static operands of " + key + " registered twice")
	}
	staticOperandsOf[key] = positions
}

// staticOperandsFuncOf maps an operator's key to a function deciding its
// static operands from the node (see registerStaticOperandsFunc).
var staticOperandsFuncOf = map[string]func(n *onnx.Node) []int{}

// registerStaticOperandsFunc is registerStaticOperands for operators
// whose static inputs depend on their attributes (a LabelEncoder mapping
// to strings needs its input at import, one mapping to numbers does not).
func registerStaticOperandsFunc(domain, opType string, positions func(n *onnx.Node) []int) {
	key := opKey(domain, opType)
	if _, dup := staticOperandsFuncOf[key]; dup {
		panic("ir: static operands of " + key + " registered twice")
	}
	staticOperandsFuncOf[key] = positions
}

// nodeStaticOperands are the input positions of node n that must be
// known at import.
func nodeStaticOperands(n *onnx.Node) []int {
	key := opKey(n.Domain, n.OpType)
	if f, ok := staticOperandsFuncOf[key]; ok {
		return f(n)
	}
	return staticOperandsOf[key]
}

// compositeOps are the operators that take sequences and optionals.
var compositeOps = map[string]bool{}

// registerTakesComposites declares operators whose inputs may be
// sequences or optionals (Identity, the Sequence and Optional operators,
// control flow). Import refuses a sequence or optional input of any
// other operator with a clear error.
func registerTakesComposites(domain string, opTypes ...string) {
	for _, op := range opTypes {
		compositeOps[opKey(domain, op)] = true
	}
}

func takesComposites(domain, opType string) bool { return compositeOps[opKey(domain, opType)] }

// opKey is how operators are named in registrations, listings and
// messages: the op type alone in the default domain, "domain::OpType"
// elsewhere ("com.microsoft::FastGelu").
func opKey(domain, opType string) string {
	if domain == "" || domain == "ai.onnx" {
		return opType
	}
	return domain + "::" + opType
}

// SupportedOps lists the operators the importer knows, as opKey spells
// them, sorted.
func SupportedOps() []string {
	names := make([]string, 0, len(importers))
	for n := range importers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// IsSupportedOp reports whether the importer knows opType of domain.
func IsSupportedOp(domain, opType string) bool {
	_, ok := importers[opKey(domain, opType)]
	return ok
}

// domainOpset is the opset the model imports for domain (0 when none).
func (im *importer) domainOpset(domain string) int {
	return int(im.model.ONNX.Opset(domain))
}

func lookupImporter(n *onnx.Node) (importFunc, error) {
	if f, ok := importers[opKey(n.Domain, n.OpType)]; ok {
		return f, nil
	}
	if n.Domain != "" && n.Domain != "ai.onnx" {
		known := false
		prefix := n.Domain + "::"
		for k := range importers {
			if strings.HasPrefix(k, prefix) {
				known = true
				break
			}
		}
		if !known {
			return nil, fmt.Errorf("%w: operator %s (dstune imports no operator of domain %q)", ErrNotSupported, opKey(n.Domain, n.OpType), n.Domain)
		}
	}
	return nil, fmt.Errorf("%w: operator %s", ErrNotSupported, opKey(n.Domain, n.OpType))
}
