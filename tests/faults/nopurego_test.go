//go:build !purego

package faults

// buildTags are the tags the dstune binary is built with: the test's own.
const buildTags = ""
