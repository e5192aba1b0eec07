package ir

// The element-wise math operators of ONNX beyond the core set that
// import_ops.go registers: trigonometric and hyperbolic functions.

func init() {
	for name, fn := range map[string]UnaryFn{
		"Cos": Cos, "Sin": Sin, "Tan": Tan, "Acos": Acos, "Asin": Asin, "Atan": Atan,
		"Acosh": Acosh, "Asinh": Asinh, "Atanh": Atanh, "Cosh": Cosh, "Sinh": Sinh,
	} {
		registerOp("", name, importUnary(fn))
	}
}
