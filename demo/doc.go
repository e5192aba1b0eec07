// Package demo is `dstune demo`: Dynamic Subset Tuning end to end on a
// small model and task that ship in the repository.
package demo
