package serve

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// DeltaExt is the extension of the delta files a server serves; a delta's
// model name is its file name without it.
const DeltaExt = ".safetensors"

// BaseName is the model name of the base model itself.
const BaseName = "base"

// ErrUnknownDelta is wrapped when no delta file has the requested name.
var ErrUnknownDelta = errors.New("no such model")

// ErrDeltaUnusable is wrapped when a delta file exists but cannot be
// read (truncated, not a delta).
var ErrDeltaUnusable = errors.New("the delta file cannot be used")

// deltaStore loads the deltas of a directory on first use and again when
// a file changes (size or modification time); a failed load is remembered
// until the file changes.
type deltaStore struct {
	dir  string
	base *Base

	mu      sync.Mutex
	entries map[string]*deltaEntry
	loads   map[string]int64 // loads by result, for the metrics
}

type deltaEntry struct {
	mu      sync.Mutex // held while loading
	modTime time.Time
	size    int64
	patch   *Patch
	err     error
}

func newDeltaStore(dir string, base *Base) *deltaStore {
	return &deltaStore{dir: dir, base: base, entries: map[string]*deltaEntry{}, loads: map[string]int64{}}
}

// validName accepts the names of files directly in the directory.
func validName(name string) bool {
	return name != "" && !strings.ContainsAny(name, `/\`) && !strings.HasPrefix(name, ".") && name == filepath.Base(name)
}

// get returns the patch of the named delta, loading it when it is new or
// its file changed.
func (s *deltaStore) get(name string) (*Patch, error) {
	if !validName(name) || s.dir == "" {
		return nil, fmt.Errorf("%w: %q", ErrUnknownDelta, name)
	}
	path := filepath.Join(s.dir, name+DeltaExt)
	info, err := os.Stat(path)
	if err != nil || !info.Mode().IsRegular() {
		s.forget(name)
		return nil, fmt.Errorf("%w: %q (no delta file %s%s)", ErrUnknownDelta, name, name, DeltaExt)
	}
	s.mu.Lock()
	e, ok := s.entries[name]
	if !ok {
		e = &deltaEntry{}
		s.entries[name] = e
	}
	s.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	if (e.patch != nil || e.err != nil) && e.modTime.Equal(info.ModTime()) && e.size == info.Size() {
		return e.patch, e.err
	}
	e.patch, e.err = s.load(path)
	e.modTime, e.size = info.ModTime(), info.Size()
	result := "ok"
	switch {
	case errors.Is(e.err, ErrBaseMismatch):
		result = "base_mismatch"
	case e.err != nil:
		result = "unusable"
	}
	s.mu.Lock()
	s.loads[result]++
	s.mu.Unlock()
	return e.patch, e.err
}

func (s *deltaStore) load(path string) (*Patch, error) {
	d, err := s.base.readDelta(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDeltaUnusable, err)
	}
	p, err := s.base.NewPatch(d)
	if err != nil {
		if errors.Is(err, ErrBaseMismatch) {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrDeltaUnusable, path, err)
	}
	return p, nil
}

func (s *deltaStore) forget(name string) {
	s.mu.Lock()
	delete(s.entries, name)
	s.mu.Unlock()
}

// deltaInfo describes one delta file for /v1/models.
type deltaInfo struct {
	Name    string
	Loaded  bool
	Bytes   int64 // held in memory
	Entries int64
	File    int64 // file size
	Err     error
}

// list describes every delta file of the directory, sorted by name.
func (s *deltaStore) list() ([]deltaInfo, error) {
	if s.dir == "" {
		return nil, nil
	}
	files, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []deltaInfo
	for _, f := range files {
		name, ok := strings.CutSuffix(f.Name(), DeltaExt)
		if !ok || !validName(name) || !f.Type().IsRegular() {
			continue
		}
		di := deltaInfo{Name: name}
		if info, err := f.Info(); err == nil {
			di.File = info.Size()
		}
		s.mu.Lock()
		e := s.entries[name]
		s.mu.Unlock()
		if e != nil && e.mu.TryLock() {
			if e.patch != nil {
				di.Loaded, di.Bytes, di.Entries = true, e.patch.Bytes(), e.patch.Entries
			}
			di.Err = e.err
			e.mu.Unlock()
		}
		out = append(out, di)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// loaded sums the loaded deltas and their memory.
func (s *deltaStore) loaded() (count int, bytes int64) {
	s.mu.Lock()
	entries := make([]*deltaEntry, 0, len(s.entries))
	for _, e := range s.entries {
		entries = append(entries, e)
	}
	s.mu.Unlock()
	for _, e := range entries {
		if e.mu.TryLock() {
			if e.patch != nil {
				count++
				bytes += e.patch.Bytes()
			}
			e.mu.Unlock()
		}
	}
	return count, bytes
}

func (s *deltaStore) loadCounts() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(s.loads))
	for k, v := range s.loads {
		out[k] = v
	}
	return out
}
