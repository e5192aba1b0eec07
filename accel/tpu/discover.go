package tpu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// PluginEnv is the environment variable naming a PJRT plugin file.
const PluginEnv = "DSTUNE_PJRT_PLUGIN"

// Plugin is a PJRT plugin found on this machine.
type Plugin struct {
	// Path is the plugin's shared library.
	Path string
	// LibraryDirs are directories the plugin's own dependencies live in
	// (JAX's pip layout: site-packages/nvidia/*/lib), to be on the
	// library search path when it loads.
	LibraryDirs []string
	// CUDADataDir is the CUDA toolkit directory XLA should search for
	// ptxas and libdevice (site-packages/nvidia/cuda_nvcc, or nvidia/cu13
	// for CUDA 13's wheels), or "".
	CUDADataDir string
	// How says how it was found ("--pjrt-plugin", "$DSTUNE_PJRT_PLUGIN",
	// "standard path", "JAX site-packages").
	How string
}

// StandardPluginNames are the file names searched on the standard paths,
// best first.
var StandardPluginNames = []string{"libtpu.so", "pjrt_c_api_cuda_plugin.so", "pjrt_c_api_cpu_plugin.so"}

// SearchPaths says where FindPlugin looks; DefaultSearchPaths reads them
// from the environment and the usual install locations. Tests build their
// own.
type SearchPaths struct {
	// Explicit is --pjrt-plugin's value ("" when not given).
	Explicit string
	// Env is $DSTUNE_PJRT_PLUGIN ("" when unset).
	Env string
	// LibDirs are searched for the standard file names, in order.
	LibDirs []string
	// SitePackages are Python site-packages directories searched for
	// JAX's plugins (jax_plugins/xla_cuda*/xla_cuda_plugin.so) and pip's
	// libtpu (libtpu/libtpu.so).
	SitePackages []string
}

// DefaultSearchPaths returns the search paths for this process:
// $PJRT_PLUGIN_LIBRARY_PATH and $LD_LIBRARY_PATH, then /usr/local/lib/gomlx/pjrt
// (gopjrt's install location), /usr/local/lib, /usr/lib/x86_64-linux-gnu,
// /usr/lib; site-packages of $VIRTUAL_ENV, of $PYTHONPATH, of the
// /opt/*/.venv and /opt/*/venv virtual environments, of ~/.local and of
// the system's Python.
func DefaultSearchPaths(explicit string) SearchPaths {
	sp := SearchPaths{Explicit: explicit, Env: os.Getenv(PluginEnv)}
	for _, env := range []string{"PJRT_PLUGIN_LIBRARY_PATH", "LD_LIBRARY_PATH"} {
		for _, d := range filepath.SplitList(os.Getenv(env)) {
			if d != "" {
				sp.LibDirs = append(sp.LibDirs, d)
			}
		}
	}
	sp.LibDirs = append(sp.LibDirs, "/usr/local/lib/gomlx/pjrt", "/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib")
	var venvs []string
	if v := os.Getenv("VIRTUAL_ENV"); v != "" {
		venvs = append(venvs, v)
	}
	for _, pat := range []string{"/opt/*/.venv", "/opt/*/venv", "/opt/venv"} {
		m, _ := filepath.Glob(pat)
		venvs = append(venvs, m...)
	}
	if home, err := os.UserHomeDir(); err == nil {
		venvs = append(venvs, filepath.Join(home, ".local"))
	}
	venvs = append(venvs, "/usr/local", "/usr")
	for _, d := range filepath.SplitList(os.Getenv("PYTHONPATH")) {
		if d != "" {
			sp.SitePackages = append(sp.SitePackages, d)
		}
	}
	seen := map[string]bool{}
	for _, d := range sp.SitePackages {
		seen[d] = true
	}
	for _, v := range venvs {
		for _, pat := range []string{"lib/python3*/site-packages", "lib/python3*/dist-packages", "lib/python3/dist-packages"} {
			m, _ := filepath.Glob(filepath.Join(v, pat))
			sort.Strings(m)
			for _, d := range m {
				if !seen[d] {
					seen[d] = true
					sp.SitePackages = append(sp.SitePackages, d)
				}
			}
		}
	}
	return sp
}

// ErrNoPlugin is wrapped by FindPlugin's error when no plugin exists.
var ErrNoPlugin = errors.New("no PJRT plugin found")

// FindPlugin looks for a PJRT plugin, in this order: the explicit path
// (--pjrt-plugin), $DSTUNE_PJRT_PLUGIN, JAX's CUDA plugin in each
// site-packages directory (with that directory's nvidia/*/lib as library
// directories), pip's libtpu, and the standard file names in each library
// directory. An explicit path or $DSTUNE_PJRT_PLUGIN that does not exist
// is an error of its own; when nothing is found the error lists every
// place searched.
func FindPlugin(sp SearchPaths) (Plugin, error) {
	if sp.Explicit != "" {
		return checkFile(sp.Explicit, "--pjrt-plugin", sp)
	}
	if sp.Env != "" {
		return checkFile(sp.Env, "$"+PluginEnv, sp)
	}
	var searched []string
	for _, site := range sp.SitePackages {
		pat := filepath.Join(site, "jax_plugins", "xla_cuda*", "xla_cuda_plugin.so")
		searched = append(searched, pat)
		m, _ := filepath.Glob(pat)
		sort.Sort(sort.Reverse(sort.StringSlice(m))) // xla_cuda13 before xla_cuda12
		for _, path := range m {
			if isFile(path) {
				p := Plugin{Path: path, How: "JAX site-packages"}
				p.LibraryDirs, p.CUDADataDir = nvidiaDirs(site)
				return p, nil
			}
		}
		tpu := filepath.Join(site, "libtpu", "libtpu.so")
		searched = append(searched, tpu)
		if isFile(tpu) {
			return Plugin{Path: tpu, How: "pip libtpu"}, nil
		}
	}
	for _, name := range StandardPluginNames {
		for _, dir := range sp.LibDirs {
			path := filepath.Join(dir, name)
			searched = append(searched, path)
			if isFile(path) {
				return Plugin{Path: path, How: "standard path"}, nil
			}
		}
	}
	return Plugin{}, fmt.Errorf("tpu: %w: pass --pjrt-plugin PATH or set $%s; searched:\n  %s", ErrNoPlugin, PluginEnv, strings.Join(searched, "\n  "))
}

// checkFile accepts a named plugin file; a plugin inside JAX's layout
// still gets its nvidia library directories.
func checkFile(path, how string, sp SearchPaths) (Plugin, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Plugin{}, fmt.Errorf("tpu: PJRT plugin from %s: %w", how, err)
	}
	if fi.IsDir() {
		return Plugin{}, fmt.Errorf("tpu: PJRT plugin from %s: %s is a directory, want the plugin's .so file", how, path)
	}
	p := Plugin{Path: path, How: how}
	// site-packages/jax_plugins/xla_cuda12/xla_cuda_plugin.so
	if dir := filepath.Dir(filepath.Dir(path)); filepath.Base(dir) == "jax_plugins" {
		p.LibraryDirs, p.CUDADataDir = nvidiaDirs(filepath.Dir(dir))
	}
	return p, nil
}

// nvidiaDirs lists site/nvidia/*/lib (sorted) and the CUDA data directory:
// site/nvidia/cuda_nvcc, or site/nvidia/cu13 or cu12 when it holds bin/ptxas.
func nvidiaDirs(site string) ([]string, string) {
	libs, _ := filepath.Glob(filepath.Join(site, "nvidia", "*", "lib"))
	sort.Strings(libs)
	var dirs []string
	for _, l := range libs {
		if fi, err := os.Stat(l); err == nil && fi.IsDir() {
			dirs = append(dirs, l)
		}
	}
	nvcc := filepath.Join(site, "nvidia", "cuda_nvcc")
	if fi, err := os.Stat(nvcc); err == nil && fi.IsDir() {
		return dirs, nvcc
	}
	// CUDA 13's wheels put the toolkit into nvidia/cu13 (bin/ptxas there).
	for _, v := range []string{"cu13", "cu12"} {
		if d := filepath.Join(site, "nvidia", v); isFile(filepath.Join(d, "bin", "ptxas")) {
			return dirs, d
		}
	}
	return dirs, ""
}

func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir()
}
