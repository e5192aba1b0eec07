package main

import (
	"errors"

	"github.com/dstune/dstune/internal/atomicfile"
	"github.com/dstune/dstune/internal/outpath"
)

// checkOutputFile applies outpath.Check to a command's output file
// (flag names it): one of the inputs, or a device, FIFO or directory, is
// refused, an existing file needs --force.
func checkOutputFile(flag, out string, force bool, inputs ...outpath.Input) error {
	err := outpath.Check(out, force, inputs...)
	var ie *outpath.InputError
	var ee *outpath.ExistsError
	var nr *outpath.NotRegularError
	switch {
	case errors.As(err, &ie):
		return usagef("%s %v: write to another file", flag, err)
	case errors.As(err, &nr):
		return usagef("%s %v", flag, err)
	case errors.As(err, &ee):
		return usagef("%s %v (--force overwrites it)", flag, err)
	}
	return err
}

// writtenOutput is the error of writing a command's output file without
// --force (flag names it): one another process made after
// checkOutputFile found none is refused as checkOutputFile refuses it.
func writtenOutput(flag string, err error) error {
	var ee *atomicfile.ExistsError
	if errors.As(err, &ee) {
		return usagef("%s %v (--force overwrites it)", flag, ee)
	}
	return err
}
