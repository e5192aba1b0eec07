// Package accel is the backend interface: a Backend compiles an ir.Graph
// (static shapes, folded) into an Executable that runs it repeatedly with
// new inputs. Parameters are bound by their ONNX name and can be read and
// updated between runs without recompiling, which is what training needs.
// Backends depend on package ir only; they register themselves by name
// (accel/cpu as "cpu") so that the CLI can pick one with --backend.
package accel
