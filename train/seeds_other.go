//go:build !linux

package train

import (
	"errors"

	"github.com/dstune/dstune/ir"
)

// spillSeeds is Linux's: elsewhere the trainer copies the seeds.
func spillSeeds(string, []*ir.Param) (map[string][]float32, func() error, error) {
	return nil, nil, errors.New("no seed files on this system")
}

// dropPages is Linux's: elsewhere mapped seeds stay resident.
func dropPages([]byte) {}

// populatePages is Linux's: elsewhere pages fault in.
func populatePages([]byte) {}
