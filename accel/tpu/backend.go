package tpu

import (
	"github.com/dstune/dstune/accel"
)

func init() {
	accel.Register("pjrt", func() (accel.Backend, error) { return Open(Options{}) })
}

// Options configure Open.
type Options struct {
	// PluginPath is the plugin file (--pjrt-plugin); "" searches as
	// FindPlugin does.
	PluginPath string
}
