// Package accel is the backend interface: a Backend compiles an ir.Graph
// (static shapes, folded) into an Executable that runs it repeatedly with
// new inputs; a TrainingBackend also trains, running a training graph
// followed by the update program of package update (the optimizer and
// DST's selection), which each backend lowers its own way. Parameters are
// bound by their ONNX name.
//
// Backends depend on packages ir and update only — never on the training
// loop (train) or on DST's method (dst), which use them through this
// interface. They register themselves by name (accel/cpu as "cpu",
// accel/tpu as "pjrt") so that the CLI can pick one with --backend;
// OpenWith passes machine-specific Settings such as the PJRT plugin file.
package accel
