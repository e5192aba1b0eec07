package tokenizer

import "errors"

func newPrecompiled(charsmap string) (normalizer, error) {
	return nil, errors.New("Precompiled normalizer not implemented yet")
}
