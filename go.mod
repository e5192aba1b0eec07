module github.com/dstune/dstune

go 1.26.0

require (
	github.com/gomlx/gopjrt v0.10.0
	github.com/klauspost/cpuid/v2 v2.4.2 // indirect
	github.com/yalue/onnxruntime_go v1.27.0
	golang.org/x/sys v0.50.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

require (
	github.com/go-logr/logr v1.4.3 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	github.com/x448/float16 v0.8.4 // indirect
	k8s.io/klog/v2 v2.130.1 // indirect
)
