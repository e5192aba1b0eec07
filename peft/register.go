package peft

import "github.com/dstune/dstune/train"

func init() {
	train.RegisterMethod(train.MethodLoRA, func(env train.MethodEnv) (train.Method, error) { return NewLoRA(env) })
	train.RegisterMethod(train.MethodPrompt, func(env train.MethodEnv) (train.Method, error) { return NewPrompt(env) })
}
