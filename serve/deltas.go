package serve

import (
	"container/list"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"weak"

	"github.com/dstune/dstune/internal/atomicfile"
)

// DeltaExt is the extension of the delta files a server serves; a delta's
// model name is its file name without it.
const DeltaExt = ".safetensors"

// BaseName is the model name of the base model itself. A delta file
// BaseName+DeltaExt is never served (nor listed): the name is the base's.
const BaseName = "base"

// ErrUnknownDelta is wrapped when no delta file has the requested name.
var ErrUnknownDelta = errors.New("no such model")

// ErrDeltaUnusable is wrapped when a delta file exists but cannot be
// read (truncated, not a delta).
var ErrDeltaUnusable = errors.New("the delta file cannot be used")

// minDeltaCacheBytes is the least memory the loaded deltas may hold by
// default: for a small model, a bound of its own size would keep hardly a
// delta loaded.
const minDeltaCacheBytes = 256 << 20

// entryOverhead is what a cached entry is counted as holding besides its
// patch's positions and values (the map entry, the file's description, a
// failed load's error), so that the bound limits the number of entries
// too, failed loads included.
const entryOverhead = 1 << 10

// sweepInterval is how often, at most, loading a delta also drops the
// cached deltas whose file is gone or has changed (listing the models
// does it every time).
const sweepInterval = time.Second

// deltaStore loads the deltas of a directory on first use and again when
// a file changes (another file, size or modification time); a failed load
// is remembered until the file changes. The model names are the files
// directly in the directory: a client's name cannot reach elsewhere. A
// symbolic link there is served (and listed) when it leads to a regular
// file, wherever: whoever can write the directory chooses what it serves,
// and linking a run's delta into it is how one publishes it.
//
// The loaded deltas are bounded by maxBytes (their patches' Bytes, plus
// entryOverhead each): loading one drops the least recently used others
// until the rest fit, though never the one just loaded. Entries whose file
// is gone or changed are dropped when the models are listed, and by a load
// at most every sweepInterval. Dropping a patch only forgets it: a request
// that holds it (and the Scheduler, whose applied patch restores the
// weights) keeps using it intact, and while anything does, a request for
// the same unchanged file gets that patch again rather than a second copy.
type deltaStore struct {
	dir        string
	base       *Base
	maxBytes   int64
	sweepEvery time.Duration
	// warn reports, once per file and reason, a file of the directory
	// that looks like a delta but is not served.
	warn func(format string, args ...any)

	mu        sync.Mutex
	entries   map[string]*deltaEntry
	recent    list.List // of *deltaEntry, most recently used first
	bytes     int64     // the cost of the entries
	dropped   map[string]droppedPatch
	lastSweep time.Time
	warned    map[string]string // file name → the last warning about it
	loads     map[string]int64  // loads by result, for the metrics
}

// deltaEntry is one model name's cached load. Its fields but loading are
// guarded by the store's mu.
type deltaEntry struct {
	name    string
	loading sync.Mutex // held while the file is read, so that one request reads it

	file  fileVersion // what patch and err came from; no info before the first load
	patch *Patch
	err   error
	cost  int64
	elem  *list.Element // place in recent; nil once dropped
	// filling: a load is in progress; makeRoom keeps the entry, so that
	// the requests waiting on it share what it loads.
	filling bool
}

// droppedPatch remembers a patch dropped to make room, weakly: while a
// request still holds it, it is served again instead of loaded anew.
type droppedPatch struct {
	file  fileVersion
	patch weak.Pointer[Patch]
}

// fileVersion tells the versions of a delta file apart: the file it
// resolves to, which file that is (device and inode), its size and its
// modification time. A file replaced by a rename is another file even
// with the old one's size and time.
type fileVersion struct {
	path string // the file read: DIR/NAME.safetensors, or a link's target
	info fs.FileInfo
}

func (v fileVersion) same(w fileVersion) bool {
	return v.path == w.path && atomicfile.SameVersion(v.info, w.info)
}

func newDeltaStore(dir string, base *Base) *deltaStore {
	return &deltaStore{dir: dir, base: base, maxBytes: defaultDeltaCacheBytes(base), sweepEvery: sweepInterval,
		warn: log.Printf, entries: map[string]*deltaEntry{}, dropped: map[string]droppedPatch{},
		warned: map[string]string{}, loads: map[string]int64{}}
}

// defaultDeltaCacheBytes bounds the loaded deltas by the memory of the
// base model's parameters, at least minDeltaCacheBytes: serving deltas
// takes at most about the model's size again. A DST delta of ε = 1% holds
// about 2% of its model's bytes (a position and a value per entry), so
// some fifty stay loaded.
func defaultDeltaCacheBytes(base *Base) int64 {
	var n int64
	if base != nil && base.Model != nil {
		for _, p := range base.Model.Params {
			n += int64(len(p.Tensor.Bytes()))
		}
	}
	return max(n, minDeltaCacheBytes)
}

// validName accepts the names of files directly in the directory.
func validName(name string) bool {
	return name != "" && !strings.ContainsAny(name, `/\`) && !strings.HasPrefix(name, ".") && name == filepath.Base(name)
}

// notServedError is resolve's error for a file that exists but is not
// served; its text is for the operator (it may name a path outside the
// directory), reason for the client.
type notServedError struct {
	reason string
	detail string
}

func (e *notServedError) Error() string { return e.reason + e.detail }

// resolve finds the file model name is served from: DIR/NAME.safetensors
// when it is a regular file, or the regular file a symbolic link there
// leads to.
func (s *deltaStore) resolve(name string) (fileVersion, error) {
	path := filepath.Join(s.dir, name+DeltaExt)
	info, err := os.Lstat(path)
	if err != nil {
		return fileVersion{}, err
	}
	if info.Mode()&fs.ModeSymlink != 0 {
		target, err := filepath.EvalSymlinks(path)
		if err != nil {
			return fileVersion{}, &notServedError{"it is a symbolic link that leads to no file", fmt.Sprintf(" (%v)", err)}
		}
		if info, err = os.Stat(target); err != nil {
			return fileVersion{}, err
		}
		path = target
	}
	if !info.Mode().IsRegular() {
		return fileVersion{}, &notServedError{"it is not a regular file", fmt.Sprintf(" (%s)", info.Mode().Type())}
	}
	return fileVersion{path, info}, nil
}

// get returns the patch of the named delta, loading it when it is new or
// its file changed.
func (s *deltaStore) get(name string) (*Patch, error) {
	if !validName(name) || s.dir == "" {
		return nil, fmt.Errorf("%w: %q", ErrUnknownDelta, name)
	}
	if name == BaseName {
		return nil, fmt.Errorf("%w: %q is the base model; a delta file %s%s is not served", ErrUnknownDelta, name, name, DeltaExt)
	}
	file, err := s.resolve(name)
	if err != nil {
		s.drop(name)
		var ns *notServedError
		switch {
		case errors.As(err, &ns):
			s.warnOnce(name+DeltaExt, "%s is not served: %s", name+DeltaExt, err)
			return nil, fmt.Errorf("%w: %q (%s%s is not served: %s)", ErrUnknownDelta, name, name, DeltaExt, ns.reason)
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("%w: %q (no delta file %s%s)", ErrUnknownDelta, name, name, DeltaExt)
		}
		return nil, shownAs(fmt.Errorf("%w: %w", ErrDeltaUnusable, err), name+DeltaExt, filepath.Join(s.dir, name+DeltaExt))
	}
	s.mu.Lock()
	e := s.entries[name]
	switch {
	case e == nil:
		e = &deltaEntry{name: name, cost: entryOverhead}
		e.elem = s.recent.PushFront(e)
		s.entries[name] = e
		s.bytes += e.cost
	case e.file.same(file):
		s.recent.MoveToFront(e.elem)
		p, err := e.patch, e.err
		s.mu.Unlock()
		return p, err
	default:
		s.recent.MoveToFront(e.elem)
	}
	s.mu.Unlock()
	return s.fill(e, file)
}

// fill loads file into e, unless another request did meanwhile, and
// makes room for it; now and then it sweeps the store too.
func (s *deltaStore) fill(e *deltaEntry, file fileVersion) (*Patch, error) {
	e.loading.Lock()
	s.mu.Lock()
	if e.file.same(file) { // loaded by another request meanwhile
		p, err := e.patch, e.err
		s.mu.Unlock()
		e.loading.Unlock()
		return p, err
	}
	p := s.undrop(e.name, file)
	e.filling = true
	s.mu.Unlock()
	reused := p != nil
	var err error
	if !reused {
		p, err = s.load(file.path)
		// Clients (and GET /v1/models) are told of the file by its name
		// in the delta directory, not where the server keeps it.
		err = shownAs(err, e.name+DeltaExt, file.path, filepath.Join(s.dir, e.name+DeltaExt))
	}

	s.mu.Lock()
	e.file, e.patch, e.err, e.filling = file, p, err, false
	if !reused {
		result := "ok"
		switch {
		case errors.Is(err, ErrBaseMismatch):
			result = "base_mismatch"
		case err != nil:
			result = "unusable"
		}
		s.loads[result]++
	}
	if e.elem != nil { // not dropped while it loaded
		cost := int64(entryOverhead)
		if p != nil {
			cost += p.Bytes()
		} else if err != nil {
			cost += int64(len(err.Error()))
		}
		s.bytes += cost - e.cost
		e.cost = cost
		s.makeRoom(e)
	}
	sweep := time.Since(s.lastSweep) >= s.sweepEvery
	if sweep {
		s.lastSweep = time.Now()
	}
	s.mu.Unlock()
	e.loading.Unlock()
	if sweep {
		s.sweep()
	}
	return p, err
}

// shownAs is err with each of paths in its message written as name; it
// wraps err still.
func shownAs(err error, name string, paths ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, p := range paths {
		msg = strings.ReplaceAll(msg, p, name)
	}
	return &renamedError{msg, err}
}

type renamedError struct {
	msg string
	err error
}

func (e *renamedError) Error() string { return e.msg }
func (e *renamedError) Unwrap() error { return e.err }

// undrop returns the patch of file that was dropped to make room and is
// still held by a request, or nil. s.mu is held.
func (s *deltaStore) undrop(name string, file fileVersion) *Patch {
	d, ok := s.dropped[name]
	if !ok {
		return nil
	}
	delete(s.dropped, name)
	if !d.file.same(file) {
		return nil
	}
	return d.patch.Value()
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

// makeRoom drops the least recently used entries other than keep and
// those being loaded until the entries cost at most maxBytes. s.mu is
// held.
func (s *deltaStore) makeRoom(keep *deltaEntry) {
	for el := s.recent.Back(); el != nil && s.bytes > s.maxBytes; {
		prev := el.Prev()
		if e := el.Value.(*deltaEntry); e != keep && !e.filling {
			if e.patch != nil {
				s.dropped[e.name] = droppedPatch{e.file, weak.Make(e.patch)}
			}
			s.remove(e)
		}
		el = prev
	}
}

// remove takes e out of the store; a request holding its patch keeps it.
// s.mu is held.
func (s *deltaStore) remove(e *deltaEntry) {
	if e.elem == nil {
		return
	}
	s.recent.Remove(e.elem)
	e.elem = nil
	s.bytes -= e.cost
	if s.entries[e.name] == e {
		delete(s.entries, e.name)
	}
}

// drop forgets the named delta: its file is gone or changed.
func (s *deltaStore) drop(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[name]; e != nil {
		s.remove(e)
	}
	delete(s.dropped, name)
}

// sweep drops the loaded entries whose file is gone or has changed, and
// the dropped patches that nothing holds any more.
func (s *deltaStore) sweep() {
	type loaded struct {
		e    *deltaEntry
		file fileVersion
	}
	s.mu.Lock()
	check := make([]loaded, 0, len(s.entries))
	for _, e := range s.entries {
		if e.file.info != nil {
			check = append(check, loaded{e, e.file})
		}
	}
	for name, d := range s.dropped {
		if d.patch.Value() == nil {
			delete(s.dropped, name)
		}
	}
	s.mu.Unlock()
	for _, c := range check {
		file, err := s.resolve(c.e.name)
		if err == nil && file.same(c.file) {
			continue
		}
		s.mu.Lock()
		if c.e.file == c.file { // not reloaded meanwhile
			s.remove(c.e)
		}
		s.mu.Unlock()
	}
}

// warnOnce reports a file that is not served, once per file and reason.
func (s *deltaStore) warnOnce(file, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	repeat := s.warned[file] == msg
	s.warned[file] = msg
	s.mu.Unlock()
	if !repeat {
		s.warn("delta directory %s: %s", s.dir, msg)
	}
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

// list describes every delta file of the directory that get serves,
// sorted by name, warning (once) about the files named like deltas that
// it does not serve. Entries whose file is gone or changed are dropped.
func (s *deltaStore) list() ([]deltaInfo, error) {
	if s.dir == "" {
		return nil, nil
	}
	files, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []deltaInfo
	listed := map[string]bool{} // files named like deltas
	served := map[string]bool{} // their model names, where served
	for _, f := range files {
		name, ok := strings.CutSuffix(f.Name(), DeltaExt)
		if !ok || !validName(name) {
			continue
		}
		listed[f.Name()] = true
		if name == BaseName {
			s.warnOnce(f.Name(), "%s is not served: model %q is the base model itself (rename the file to serve it as a delta)", f.Name(), BaseName)
			continue
		}
		file, err := s.resolve(name)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) { // else removed since ReadDir
				s.warnOnce(f.Name(), "%s is not served: %v", f.Name(), err)
			}
			continue
		}
		served[name] = true
		di := deltaInfo{Name: name, File: file.info.Size()}
		s.mu.Lock()
		if e := s.entries[name]; e != nil && e.file.info != nil {
			if e.file.same(file) {
				di.Err = e.err
				if e.patch != nil {
					di.Loaded, di.Bytes, di.Entries = true, e.patch.Bytes(), e.patch.Entries
				}
			} else {
				s.remove(e)
			}
		}
		s.mu.Unlock()
		out = append(out, di)
	}
	s.mu.Lock()
	for name, e := range s.entries {
		if !served[name] && e.file.info != nil {
			s.remove(e)
		}
	}
	for file := range s.warned {
		if !listed[file] {
			delete(s.warned, file) // gone: warn again should it come back
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// loaded sums the loaded deltas and their memory.
func (s *deltaStore) loaded() (count int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.entries {
		if e.patch != nil {
			count++
			bytes += e.patch.Bytes()
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
