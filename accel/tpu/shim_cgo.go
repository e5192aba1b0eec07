//go:build cgo

package tpu

// The plugin is loaded here rather than by gopjrt's loader so that
// dstune can stand between gopjrt and the plugin's PJRT_Execute: gopjrt
// v0.10.0 is built against PJRT C API 0.81, whose PJRT_ExecuteOptions is
// 112 bytes, and newer plugins reject a smaller struct ("Unexpected
// PJRT_ExecuteOptions size"). dstune copies the plugin's function table,
// replaces the PJRT_LoadedExecutable_Execute entry with executeShim below,
// and registers the copy with gopjrt (pjrt.RegisterPreloadedPlugin). The
// shim passes the call through unchanged until a size is set; then it
// hands the plugin a zero-padded copy of the options with struct_size
// raised to that size (fields a newer API appended read as zero, their
// defaults). The size comes from the plugin's own error message on the
// first execution (see learnOptionsSize). gopjrt itself is not patched.
//
// The offsets are those of the PJRT C API, which only ever appends to its
// structs: PJRT_Api's PJRT_LoadedExecutable_Execute entry is at byte 480
// and PJRT_LoadedExecutable_Execute_Args' options pointer at byte 24 on
// 64-bit targets (TestPJRTOffsets checks them against gopjrt's header).

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>

enum {
	dstuneApiExecuteOffset = 480,
	dstuneExecuteArgsOptionsOffset = 24,
};

typedef void* (*dstuneGetApiFn)(void);
typedef void* (*dstuneExecuteFn)(void*);

static dstuneExecuteFn dstuneRealExecute;
static size_t dstuneOptionsSize;

static void* dstuneExecuteShim(void* args) {
	void** slot = (void**)((char*)args + dstuneExecuteArgsOptionsOffset);
	size_t* opts = (size_t*)*slot;
	size_t want = dstuneOptionsSize;
	if (opts == NULL || want <= opts[0]) {
		return dstuneRealExecute(args);
	}
	char* padded = calloc(1, want);
	if (padded == NULL) {
		return dstuneRealExecute(args);
	}
	memcpy(padded, opts, opts[0]);
	((size_t*)padded)[0] = want;
	*slot = padded;
	void* err = dstuneRealExecute(args);
	*slot = opts;
	free(padded);
	return err;
}

static void dstuneSetOptionsSize(size_t n) { dstuneOptionsSize = n; }
static size_t dstuneGetOptionsSize(void) { return dstuneOptionsSize; }

// dstuneOpen dlopens a library; global makes its symbols available to
// libraries loaded later (the plugin's dependencies).
static void* dstuneOpen(const char* path, int global) {
	return dlopen(path, RTLD_NOW | (global ? RTLD_GLOBAL : RTLD_LOCAL));
}

static const char* dstuneDlerror(void) {
	const char* e = dlerror();
	return e ? e : "unknown dlopen error";
}

// dstunePatchedApi returns a copy of the plugin's PJRT_Api table with the
// execute entry replaced, or NULL (*why says why).
static void* dstunePatchedApi(void* handle, const char** why) {
	dstuneGetApiFn get = (dstuneGetApiFn)dlsym(handle, "GetPjrtApi");
	if (get == NULL) {
		*why = "the library does not export GetPjrtApi";
		return NULL;
	}
	const char* api = (const char*)get();
	if (api == NULL) {
		*why = "GetPjrtApi returned NULL";
		return NULL;
	}
	size_t size = *(const size_t*)api;
	if (size < dstuneApiExecuteOffset + sizeof(void*)) {
		*why = "the plugin's PJRT_Api table is too short";
		return NULL;
	}
	char* copy = malloc(size);
	if (copy == NULL) {
		*why = "out of memory";
		return NULL;
	}
	memcpy(copy, api, size);
	dstuneRealExecute = *(dstuneExecuteFn*)(api + dstuneApiExecuteOffset);
	*(dstuneExecuteFn*)(copy + dstuneApiExecuteOffset) = dstuneExecuteShim;
	return copy;
}
*/
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unsafe"
)

// patchedAPI loads the plugin and returns its patched function table.
func patchedAPI(path string) (uintptr, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	h := C.dstuneOpen(cpath, 0)
	if h == nil {
		return 0, fmt.Errorf("tpu: loading PJRT plugin %s: %s", path, C.GoString(C.dstuneDlerror()))
	}
	var why *C.char
	api := C.dstunePatchedApi(h, &why)
	if api == nil {
		return 0, fmt.Errorf("tpu: PJRT plugin %s: %s", path, C.GoString(why))
	}
	return uintptr(api), nil
}

var optionsSizeMessage = regexp.MustCompile(`PJRT_ExecuteOptions[^0-9]*expected (?:at least )?(\d+)`)

// learnOptionsSize reads the struct size a plugin asked for from its
// error and sets the shim to pass it; it reports whether a retry may
// succeed.
func learnOptionsSize(err error) bool {
	m := optionsSizeMessage.FindStringSubmatch(err.Error())
	if m == nil {
		return false
	}
	n, perr := strconv.Atoi(m[1])
	if perr != nil || n <= int(C.dstuneGetOptionsSize()) || n <= 112 || n > 1<<16 {
		return false
	}
	C.dstuneSetOptionsSize(C.size_t(n))
	return true
}

// preloadLibraries loads every shared library in dirs with global
// symbols, so that the plugin's dependencies resolve from them even when
// the directories are not on LD_LIBRARY_PATH (which the dynamic loader
// only reads at process start). Libraries that fail because a dependency
// is not loaded yet are retried until no more succeed; failures are not
// errors (the plugin's own load reports what is really missing).
func preloadLibraries(dirs []string) int {
	onPath := map[string]bool{}
	for _, d := range filepath.SplitList(os.Getenv("LD_LIBRARY_PATH")) {
		onPath[filepath.Clean(d)] = true
	}
	var pending []string
	for _, d := range dirs {
		if onPath[filepath.Clean(d)] {
			continue
		}
		m, _ := filepath.Glob(filepath.Join(d, "*.so*"))
		sort.Strings(m)
		for _, f := range m {
			if !strings.HasSuffix(f, ".py") {
				pending = append(pending, f)
			}
		}
	}
	loaded := 0
	for progress := true; progress && len(pending) > 0; {
		progress = false
		var still []string
		for _, f := range pending {
			cf := C.CString(f)
			h := C.dstuneOpen(cf, 1)
			C.free(unsafe.Pointer(cf))
			if h == nil {
				still = append(still, f)
				continue
			}
			loaded++
			progress = true
		}
		pending = still
	}
	return loaded
}

// optionsSize is the PJRT_ExecuteOptions size the shim passes (0: as
// gopjrt sets it).
func optionsSize() int { return int(C.dstuneGetOptionsSize()) }

// resetOptionsSize forgets a learned size (tests).
func resetOptionsSize() { C.dstuneSetOptionsSize(0) }
