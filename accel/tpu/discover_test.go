package tpu

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func touch(t *testing.T, path string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("not really a plugin"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFindPluginOrder(t *testing.T) {
	root := t.TempDir()
	site := filepath.Join(root, "venv/lib/python3.12/site-packages")
	cuda := touch(t, filepath.Join(site, "jax_plugins/xla_cuda12/xla_cuda_plugin.so"))
	touch(t, filepath.Join(site, "nvidia/cublas/lib/libcublas.so.12"))
	touch(t, filepath.Join(site, "nvidia/cudnn/lib/libcudnn.so.9"))
	if err := os.MkdirAll(filepath.Join(site, "nvidia/cuda_nvcc/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	libdir := filepath.Join(root, "lib")
	cpu := touch(t, filepath.Join(libdir, "pjrt_c_api_cpu_plugin.so"))
	explicit := touch(t, filepath.Join(root, "mine.so"))
	sp := SearchPaths{LibDirs: []string{libdir}, SitePackages: []string{filepath.Join(root, "empty-site"), site}}

	p, err := FindPlugin(sp)
	if err != nil {
		t.Fatal(err)
	}
	if p.Path != cuda || p.How != "JAX site-packages" {
		t.Errorf("found %+v, want JAX's CUDA plugin %s", p, cuda)
	}
	wantLibs := []string{filepath.Join(site, "nvidia/cublas/lib"), filepath.Join(site, "nvidia/cudnn/lib")}
	if strings.Join(p.LibraryDirs, ":") != strings.Join(wantLibs, ":") {
		t.Errorf("library dirs %v, want %v", p.LibraryDirs, wantLibs)
	}
	if p.CUDADataDir != filepath.Join(site, "nvidia/cuda_nvcc") {
		t.Errorf("CUDA data dir %q", p.CUDADataDir)
	}

	// $DSTUNE_PJRT_PLUGIN beats the search, --pjrt-plugin beats both.
	sp.Env = cpu
	if p, err := FindPlugin(sp); err != nil || p.Path != cpu || p.How != "$DSTUNE_PJRT_PLUGIN" {
		t.Errorf("with the environment variable: %+v, %v", p, err)
	}
	sp.Explicit = explicit
	if p, err := FindPlugin(sp); err != nil || p.Path != explicit || p.How != "--pjrt-plugin" || p.LibraryDirs != nil {
		t.Errorf("with --pjrt-plugin: %+v, %v", p, err)
	}
	// A plugin named inside JAX's layout still gets its nvidia libraries.
	sp.Explicit = cuda
	if p, err := FindPlugin(sp); err != nil || len(p.LibraryDirs) != 2 {
		t.Errorf("explicit JAX plugin: %+v, %v", p, err)
	}

	// CUDA 13's wheels: the toolkit in nvidia/cu13, whose lib is searched too.
	site13 := filepath.Join(root, "venv13/lib/python3.12/site-packages")
	cuda13 := touch(t, filepath.Join(site13, "jax_plugins/xla_cuda13/xla_cuda_plugin.so"))
	touch(t, filepath.Join(site13, "nvidia/cu13/lib/libcublas.so.13"))
	touch(t, filepath.Join(site13, "nvidia/cu13/bin/ptxas"))
	if p, err := FindPlugin(SearchPaths{SitePackages: []string{site13}}); err != nil || p.Path != cuda13 ||
		p.CUDADataDir != filepath.Join(site13, "nvidia/cu13") || len(p.LibraryDirs) != 1 {
		t.Errorf("CUDA 13 layout: %+v, %v", p, err)
	}

	// Standard names on the library path when there is no JAX.
	sp = SearchPaths{LibDirs: []string{filepath.Join(root, "nothing"), libdir}}
	if p, err := FindPlugin(sp); err != nil || p.Path != cpu || p.How != "standard path" {
		t.Errorf("standard path: %+v, %v", p, err)
	}
	// libtpu.so ranks first among the standard names.
	tpu := touch(t, filepath.Join(root, "lib2", "libtpu.so"))
	sp.LibDirs = append(sp.LibDirs, filepath.Dir(tpu))
	if p, err := FindPlugin(sp); err != nil || p.Path != tpu {
		t.Errorf("libtpu: %+v, %v", p, err)
	}
}

func TestFindPluginErrors(t *testing.T) {
	root := t.TempDir()
	sp := SearchPaths{LibDirs: []string{filepath.Join(root, "a"), filepath.Join(root, "b")}, SitePackages: []string{filepath.Join(root, "site")}}
	_, err := FindPlugin(sp)
	if !errors.Is(err, ErrNoPlugin) {
		t.Fatalf("error %v, want ErrNoPlugin", err)
	}
	msg := err.Error()
	for _, want := range []string{
		filepath.Join(root, "site", "jax_plugins", "xla_cuda*", "xla_cuda_plugin.so"),
		filepath.Join(root, "site", "libtpu", "libtpu.so"),
		filepath.Join(root, "a", "libtpu.so"),
		filepath.Join(root, "b", "pjrt_c_api_cuda_plugin.so"),
		filepath.Join(root, "b", "pjrt_c_api_cpu_plugin.so"),
		"--pjrt-plugin", PluginEnv,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not mention %s:\n%s", want, msg)
		}
	}
	// A named file that is missing or a directory is its own error.
	if _, err := FindPlugin(SearchPaths{Explicit: filepath.Join(root, "missing.so")}); err == nil || !strings.Contains(err.Error(), "--pjrt-plugin") || errors.Is(err, ErrNoPlugin) {
		t.Errorf("missing --pjrt-plugin file: %v", err)
	}
	if _, err := FindPlugin(SearchPaths{Env: root}); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Errorf("$%s naming a directory: %v", PluginEnv, err)
	}
}

func TestDefaultSearchPaths(t *testing.T) {
	root := t.TempDir()
	venv := filepath.Join(root, "venv")
	site := filepath.Join(venv, "lib/python3.11/site-packages")
	if err := os.MkdirAll(site, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VIRTUAL_ENV", venv)
	t.Setenv("LD_LIBRARY_PATH", "/x/lib:/y/lib")
	t.Setenv("PJRT_PLUGIN_LIBRARY_PATH", "/p")
	t.Setenv(PluginEnv, "/some/plugin.so")
	sp := DefaultSearchPaths("/flag.so")
	if sp.Explicit != "/flag.so" || sp.Env != "/some/plugin.so" {
		t.Errorf("explicit %q env %q", sp.Explicit, sp.Env)
	}
	if strings.Join(sp.LibDirs[:3], ":") != "/p:/x/lib:/y/lib" {
		t.Errorf("library dirs %v", sp.LibDirs)
	}
	if len(sp.SitePackages) == 0 || sp.SitePackages[0] != site {
		t.Errorf("site-packages %v, want %s first", sp.SitePackages, site)
	}
}
