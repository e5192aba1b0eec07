package tpu

import (
	"errors"

	"github.com/dstune/dstune/accel"
)

// PluginSetting is the accel.Settings key of the PJRT plugin file
// (dstune train --pjrt-plugin).
const PluginSetting = "pjrt-plugin"

func init() {
	accel.Register("pjrt", func(s accel.Settings) (accel.Backend, error) { return Open(Options{PluginPath: s[PluginSetting]}) })
}

// Options configure Open.
type Options struct {
	// PluginPath is the plugin file (--pjrt-plugin); "" searches as
	// FindPlugin does.
	PluginPath string
}

// ErrNeedsCgo is returned by Open in builds without cgo.
var ErrNeedsCgo = errors.New("tpu: the pjrt backend needs a cgo build (CGO_ENABLED=1 and a C compiler); this dstune was built without cgo")

// CheckRuntime says, without loading anything, whether Open can work
// here: this build has cgo and a plugin is found (pluginPath, or as
// FindPlugin searches; its error lists every place searched). Commands
// call it before any other work, so that a missing plugin fails fast.
func CheckRuntime(pluginPath string) (Plugin, error) {
	if !haveCgo {
		return Plugin{}, ErrNeedsCgo
	}
	return FindPlugin(DefaultSearchPaths(pluginPath))
}
