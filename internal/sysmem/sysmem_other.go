//go:build !linux && !darwin

package sysmem

func physical() int64          { return 0 }
func cgroupLimit() int64       { return 0 }
func addressSpaceLimit() int64 { return 0 }

func rss() (current, peak int64) { return 0, 0 }
