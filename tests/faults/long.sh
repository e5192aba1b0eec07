#!/usr/bin/env bash
# The long fault suite, for a quiet machine (about two hours with the
# defaults): the fault tests with every crash point at every checkpoint,
# hundreds of random kills and, as root, the full-disk test on a tmpfs;
# then every fuzz target of dstune's readers for FUZZTIME (10m) each.
# Run from anywhere; a failing test or fuzz target stops it (the fuzzer's
# failing input is kept in the package's testdata/fuzz).
set -euo pipefail
cd "$(dirname "$0")/../.."
fuzztime=${FUZZTIME:-10m}

echo "=== fault suite (DSTUNE_FAULTS_LONG=1)"
DSTUNE_FAULTS_LONG=1 go test -count=1 -timeout 2h -v ./tests/faults

for target in \
  ./train:FuzzReadJSONL ./train:FuzzReadCheckpoint \
  ./dst:FuzzDecodeDelta ./internal/safetensors:FuzzDecode \
  ./onnx:FuzzDecode ./onnx:FuzzDecodeTensor ./onnx:FuzzDecodeValue ./ir:FuzzImport \
  ./serve:FuzzCompletionRequest \
  ./tokenizer:FuzzParseHF ./tokenizer:FuzzParseLlama2C; do
  pkg=${target%%:*} name=${target##*:}
  echo "=== $name ($pkg), $fuzztime"
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"
done
echo "=== the long fault suite passed"
