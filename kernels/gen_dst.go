package kernels

//go:generate go run -C ../asm ./dst -out ../kernels/dst_amd64.s -stubs ../kernels/dst_stubs_amd64.go -pkg kernels
