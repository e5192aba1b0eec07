//go:build !linux

package pages

// PageOut is Linux's: elsewhere the pages stay.
func PageOut([]byte) {}

// Drop is Linux's: elsewhere the pages stay.
func Drop([]byte) int { return 0 }

// Populate is Linux's: elsewhere pages fault in.
func Populate([]byte, bool) {}
