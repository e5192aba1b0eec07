// Package pages tells the kernel what a process needs of its memory
// pages: drop these, map those now, page that file's out. Only Linux acts
// on it; elsewhere every call leaves memory as it is.
package pages
