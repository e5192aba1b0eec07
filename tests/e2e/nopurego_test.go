//go:build !purego

package e2e

// buildTags are the tags the dstune binary is built with: the test's own.
const buildTags = ""
