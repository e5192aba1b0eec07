package train

import (
	"errors"
	"io/fs"
	"os"

	"github.com/dstune/dstune/internal/atomicfile"
	"github.com/dstune/dstune/internal/crashpoint"
)

// The run's directories that are replaced whole — the checkpoint, the
// best validation's outputs — are written into a temporary directory and
// swapped into place, so that a crash at any point leaves a complete one.

// swapDir puts tmp, complete and synced, in cur's place within parent:
// cur, when there is one, is renamed to aside first (replacing what
// aside held), and stays there for the caller to remove; without a cur
// (a crash in an earlier swap) aside keeps what it holds until tmp is in
// place. name labels the crash points ("NAME.swapping", "NAME.swapped").
func swapDir(parent, tmp, cur, aside, name string) error {
	if _, err := os.Stat(cur); err == nil {
		if err := os.RemoveAll(aside); err != nil {
			return err
		}
		if err := os.Rename(cur, aside); err != nil {
			return err
		}
	}
	crashpoint.Hit(name + ".swapping")
	if err := os.Rename(tmp, cur); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(parent); err != nil {
		return err
	}
	crashpoint.Hit(name + ".swapped")
	return nil
}

// settleSwap finishes what a crash left of swapDir: without a cur, the
// previous directory (old) is put back; old and an unfinished tmp are
// removed.
func settleSwap(parent, tmp, cur, old string) error {
	if _, err := os.Stat(cur); errors.Is(err, fs.ErrNotExist) {
		if err := os.Rename(old, cur); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	for _, stale := range []string{old, tmp} {
		if err := os.RemoveAll(stale); err != nil {
			return err
		}
	}
	return atomicfile.SyncDir(parent)
}
