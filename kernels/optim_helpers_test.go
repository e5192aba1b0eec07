package kernels

import "github.com/dstune/dstune/update"

// The tests give the optimizers' hyper-parameters and take the kernels'
// scalars as package update derives them for every backend.

func adamwAt(h update.AdamW, step int64) AdamW {
	return AdamW(h.Scalars(update.StepInfo{Step: step, LRScale: 1}))
}

func sgdAt(h update.SGD, step int64) SGD {
	return SGD(h.Scalars(update.StepInfo{Step: step, LRScale: 1}))
}

// adafactorDefault is the paper's Adafactor (relative step, decay rate
// −0.8, eps2 1e-3).
var adafactorDefault = update.Adafactor{ScaleParameter: true, DecayRate: -0.8, ClipThreshold: 1, Eps1: 1e-30, Eps2: 1e-3}
