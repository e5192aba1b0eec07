//go:build !linux

package cpu

// dropPages is Linux's: elsewhere the pages stay.
func dropPages([]byte) int { return 0 }

// populatePages is Linux's: elsewhere pages fault in.
func populatePages([]byte, bool) {}
