package ir

import "fmt"

// stringOp is implemented by the IR ops that take or produce string
// tensors. Strings are known at import: such ops always fold there, and
// backends never see them.
type stringOp interface {
	Op
	foldsStrings()
}

// checkStrings refuses string operands for ops that do not handle them,
// and string results that would only be known at run time.
func checkStrings(op Op, in, out []Type, allConst bool) error {
	strs := false
	for _, t := range in {
		strs = strs || t.DType == String
	}
	for _, t := range out {
		strs = strs || t.DType == String
	}
	if !strs {
		return nil
	}
	if _, ok := op.(stringOp); !ok {
		return fmt.Errorf("%w: %s on string tensors", ErrNotSupported, op.Name())
	}
	if !allConst {
		return fmt.Errorf("%w: %s on values computed at run time produces strings (strings must be known at import)", ErrNotSupported, op.Name())
	}
	return nil
}
