#!/usr/bin/env bash
# The PJRT backend's device check, in one go.
#
#   tests/device/run_pjrt.sh prepare   on a development machine (Go 1.26, cgo, gcc), from
#                                      the repository root: builds the accel/tpu test binary
#                                      and dstune with cgo, writes the tiny text task and
#                                      copies the models it needs into .device/ (git-ignored,
#                                      about 45 MB)
#   tests/device/run_pjrt.sh [run]     on the GPU machine, from a copy of the working tree
#                                      with .device/ (DEVELOPERS.md); needs no Go toolchain and no
#                                      network: finds JAX's CUDA PJRT plugin in a Python
#                                      site-packages (default /opt/torch/.venv), puts its
#                                      nvidia/*/lib directories on LD_LIBRARY_PATH, then
#                                        1. dstune train --backend cpu and --backend pjrt on
#                                           tiny_gpt (DST, 20 steps), compared step by step
#                                           (losses within 1e-3 relative, identical k per silo)
#                                        2. gpt_bench step times, full fine-tuning and DST
#                                        3. the backend's device tests (models vs PyTorch,
#                                           gradients, the step vs the host reference (the
#                                           optimizers' formulas and update.ReferenceSelect),
#                                           tiny_gpt through the engine)
#                                      and prints a table. Budget: 8 minutes at most (each part
#                                      has its own timeout).
#
# Environment: DSTUNE_TESTDATA (prepare: where shared/testdata is, default
# ../shared/testdata), DSTUNE_PYTHON_SITE (run: a site-packages directory to use),
# DSTUNE_PJRT_PLUGIN (run: the plugin file, skipping the search), OUT (run: a
# directory to leave device.log and the runs' metrics in).
set -euo pipefail
cd "$(dirname "$0")/../.."
dev=.device

prepare() {
	local td=${DSTUNE_TESTDATA:-../shared/testdata}
	[ -d "$td/models/tiny_gpt" ] || { echo "no test data at $td (set DSTUNE_TESTDATA)" >&2; exit 1; }
	rm -rf "$dev"
	mkdir -p "$dev/testdata/models" "$dev/testdata/bench"
	CGO_ENABLED=1 go test -c -ldflags='-s -w' -o "$dev/tpu.test" ./accel/tpu
	CGO_ENABLED=1 go build -ldflags='-s -w' -o "$dev/dstune" ./cmd/dstune
	go run ./dst/experiments/tinytask -out "$dev/data" -train 400 -valid 40
	cp -r "$td/models/tiny_gpt" "$td/models/tiny_bert" "$dev/testdata/models/"
	cp "$td/bench/gpt_bench.onnx" "$dev/testdata/bench/"
	{ git rev-parse HEAD; git status --porcelain --untracked-files=no | sed 's/^/  modified: /'; } > "$dev/commit"
	du -sh "$dev"
	echo "copy the working tree with .device/ to the GPU machine and run there: bash tests/device/run_pjrt.sh"
}

find_site() {
	if [ -n "${DSTUNE_PYTHON_SITE:-}" ]; then echo "$DSTUNE_PYTHON_SITE"; return; fi
	local d
	for d in /opt/torch/.venv/lib/python3*/site-packages ${VIRTUAL_ENV:+$VIRTUAL_ENV/lib/python3*/site-packages} \
		/opt/*/.venv/lib/python3*/site-packages /usr/local/lib/python3*/dist-packages /usr/lib/python3/dist-packages; do
		if compgen -G "$d/jax_plugins/xla_cuda*/xla_cuda_plugin.so" >/dev/null; then echo "$d"; return; fi
	done
}

run() {
	[ -x "$dev/tpu.test" ] && [ -x "$dev/dstune" ] || { echo "$dev is incomplete: run 'tests/device/run_pjrt.sh prepare' on a machine with Go first" >&2; exit 1; }
	local start=$SECONDS
	echo "== commit $(cat "$dev/commit" 2>/dev/null || echo unknown)"
	echo "== $(nvidia-smi -L 2>/dev/null | head -1 || echo 'nvidia-smi unavailable')"
	local site
	site=$(find_site || true)
	if [ -z "${DSTUNE_PJRT_PLUGIN:-}" ]; then
		[ -n "$site" ] || { echo "no site-packages with jax_plugins/xla_cuda*/xla_cuda_plugin.so found (set DSTUNE_PYTHON_SITE or DSTUNE_PJRT_PLUGIN)" >&2; exit 1; }
		DSTUNE_PJRT_PLUGIN=$(compgen -G "$site/jax_plugins/xla_cuda*/xla_cuda_plugin.so" | sort -r | head -1)
	fi
	export DSTUNE_PJRT_PLUGIN
	if [ -n "$site" ]; then
		local libs nvcc
		libs=$(compgen -G "$site/nvidia/*/lib" | tr '\n' ':' || true)
		export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:-}"
		for nvcc in "$site/nvidia/cuda_nvcc" "$site/nvidia/cu13" "$site/nvidia/cu12" /usr/local/cuda; do
			if [ -x "$nvcc/bin/ptxas" ]; then
				export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_cuda_data_dir=$nvcc"
				break
			fi
		done
	fi
	echo "== plugin $DSTUNE_PJRT_PLUGIN; XLA_FLAGS=${XLA_FLAGS:-}"
	export DSTUNE_TESTDATA="$PWD/$dev/testdata"
	local out=${OUT:-$dev}
	local log=$out/device.log
	mkdir -p "$out"
	: > "$log"
	local rc=0

	# 1. dstune train on both backends, compared.
	local runs
	runs=$(mktemp -d)
	local common=(train "$dev/testdata/models/tiny_gpt/model.onnx" --data "$dev/data/train.jsonl" --task lm --steps 20 --batch 8
		--lr 3e-3 --seed 1 --method dst --eps 0.01 --log-every 5)
	echo "== dstune train --backend cpu" | tee -a "$log"
	timeout 60 "$dev/dstune" "${common[@]}" --backend cpu --threads 8 --out "$runs/cpu" >> "$log" 2>&1 || rc=1
	echo "== dstune train --backend pjrt" | tee -a "$log"
	timeout 120 "$dev/dstune" "${common[@]}" --backend pjrt --pjrt-plugin "$DSTUNE_PJRT_PLUGIN" --out "$runs/pjrt" >> "$log" 2>&1 || rc=1
	cp "$runs/cpu/metrics.jsonl" "$out/cpu-metrics.jsonl" 2>/dev/null || true
	cp "$runs/pjrt/metrics.jsonl" "$out/pjrt-metrics.jsonl" 2>/dev/null || true
	(cd accel/tpu && DSTUNE_COMPARE_RUNS="$runs/cpu,$runs/pjrt" timeout 30 "../../$dev/tpu.test" -test.v -test.run '^TestDeviceCompareRuns$') >> "$log" 2>&1 || rc=1
	echo "== $((SECONDS - start)) s" | tee -a "$log"

	# 2. gpt_bench step times (its own run: Go skips benchmarks after a
	# failed test). 3. The device tests, with the time left. The golden
	# files are read relative to the package directory.
	echo "== gpt_bench benchmark (timeout 210 s)" | tee -a "$log"
	(cd accel/tpu && timeout 210 "../../$dev/tpu.test" -test.v -test.run '^$' \
		-test.bench '^BenchmarkDeviceGPTBench$' -test.benchtime 20x) >> "$log" 2>&1 || rc=1
	echo "== $((SECONDS - start)) s" | tee -a "$log"
	local left=$((470 - (SECONDS - start)))
	echo "== device tests (timeout ${left} s)" | tee -a "$log"
	(cd accel/tpu && timeout "$left" "../../$dev/tpu.test" -test.v -test.timeout "$((left - 5))s" \
		-test.run '^TestDevice(ModelsMatchPyTorch|TrainingGraphs|StepMatchesHostReference|TinyGPTDST)$') >> "$log" 2>&1 || rc=1

	echo
	grep -E '^(--- (FAIL|SKIP)|FAIL|ok|PASS|panic)|dstune train:|done: step' "$log" | head -40 || true
	echo
	echo "== table"
	grep '^TABLE' "$log" | sed 's/^TABLE //' || true
	awk '/^BenchmarkDeviceGPTBench\/method=/ {
			split($1, a, "="); sub(/-[0-9]+$/, "", a[2]); ms[a[2]] = $3 / 1e6
			extra = ""; for (i = 5; i < NF; i += 2) extra = extra " " $i " " $(i+1)
			printf "gpt_bench 16x128 AdamW %-4s %8.2f ms/step (%s steps)%s\n", a[2], ms[a[2]], $2, extra
		}
		END { if (ms["full"] > 0 && ms["dst"] > 0) printf "gpt_bench DST overhead %+.2f %% (target <= 2 %%)\n", (ms["dst"] / ms["full"] - 1) * 100 }' "$log"
	echo "== full log: $log (exit $rc, $((SECONDS - start)) s)"
	return $rc
}

case "${1:-run}" in
prepare) prepare ;;
run) run ;;
*) echo "usage: $0 [prepare|run]" >&2; exit 2 ;;
esac
