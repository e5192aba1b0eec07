// Package safetensors reads and writes the safetensors format: an 8-byte
// little-endian header length N, N bytes of JSON header (padded with spaces
// to a multiple of 8), then one byte buffer holding every tensor's raw
// little-endian elements back to back.
//
// The header maps each tensor name to {"dtype", "shape", "data_offsets"},
// the offsets being [begin, end) within the byte buffer; the optional key
// "__metadata__" maps to a string→string object. A valid file's tensors,
// sorted by offset, tile the buffer exactly: the first begins at 0, each
// begins where the previous ends, the last ends at the end of the file, and
// each spans exactly numel(shape)·size(dtype) bytes.
//
// Decode treats its input as untrusted: it allocates at most in proportion
// to the header (itself capped by MaxHeaderBytes and by the file's size),
// returns tensors as views of the input without copying, and reports every
// violation as a *FormatError naming the tensor.
package safetensors
