#!/usr/bin/env bash
# The PJRT backend's device check, in one go.
#
#   tests/device/run_pjrt.sh prepare   on a development machine (Go 1.26, cgo, gcc):
#                                      builds the accel/tpu test binary and copies the
#                                      test data it needs into .device/ (git-ignored)
#   tests/device/run_pjrt.sh [run]     on the GPU machine, from the repository root, with
#                                      .device/ carried along; needs no Go toolchain and no
#                                      network: finds JAX's CUDA PJRT plugin in a Python
#                                      site-packages (default /opt/torch/.venv), puts its
#                                      nvidia/*/lib directories on LD_LIBRARY_PATH, runs the
#                                      backend tests and the gpt_bench step benchmark and
#                                      prints a table. Finishes in well under 10 minutes.
#
# Environment: DSTUNE_TESTDATA (prepare: where shared/testdata is, default
# ../shared/testdata), DSTUNE_PYTHON_SITE (run: a site-packages directory to use),
# DSTUNE_PJRT_PLUGIN (run: the plugin file, skipping the search), OUT (run: a
# directory to leave device.log in).
set -euo pipefail
cd "$(dirname "$0")/../.."
dev=.device

prepare() {
	local td=${DSTUNE_TESTDATA:-../shared/testdata}
	[ -d "$td/models/tiny_gpt" ] || { echo "no test data at $td (set DSTUNE_TESTDATA)" >&2; exit 1; }
	rm -rf "$dev"
	mkdir -p "$dev/testdata/models" "$dev/testdata/bench"
	CGO_ENABLED=1 go test -c -o "$dev/tpu.test" ./accel/tpu
	cp -r "$td/models/tiny_gpt" "$td/models/tiny_bert" "$dev/testdata/models/"
	cp "$td/bench/gpt_bench.onnx" "$dev/testdata/bench/"
	git rev-parse HEAD > "$dev/commit"
	du -sh "$dev"
	echo "carry .device (run tool: carry [\".device\"]) and run: bash tests/device/run_pjrt.sh"
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
	[ -x "$dev/tpu.test" ] || { echo "$dev/tpu.test is missing: run 'tests/device/run_pjrt.sh prepare' on a machine with Go first" >&2; exit 1; }
	echo "== commit $(cat "$dev/commit" 2>/dev/null || echo unknown); $(nvidia-smi -L 2>/dev/null | head -1 || echo 'nvidia-smi unavailable')"
	local site
	site=$(find_site || true)
	if [ -z "${DSTUNE_PJRT_PLUGIN:-}" ]; then
		[ -n "$site" ] || { echo "no site-packages with jax_plugins/xla_cuda*/xla_cuda_plugin.so found (set DSTUNE_PYTHON_SITE or DSTUNE_PJRT_PLUGIN)" >&2; exit 1; }
		DSTUNE_PJRT_PLUGIN=$(compgen -G "$site/jax_plugins/xla_cuda*/xla_cuda_plugin.so" | sort -r | head -1)
	fi
	export DSTUNE_PJRT_PLUGIN
	if [ -n "$site" ]; then
		local libs
		libs=$(compgen -G "$site/nvidia/*/lib" | tr '\n' ':' || true)
		export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:-}"
		[ -d "$site/nvidia/cuda_nvcc" ] && export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_cuda_data_dir=$site/nvidia/cuda_nvcc"
	fi
	echo "== plugin $DSTUNE_PJRT_PLUGIN"
	export DSTUNE_TESTDATA="$PWD/$dev/testdata"
	local log=${OUT:-$dev}/device.log
	mkdir -p "$(dirname "$log")"
	# The golden files are read relative to the package directory. The
	# ONNX node suite only exercises the host evaluator: CI runs it.
	set +e
	(cd accel/tpu && timeout 540 "../../$dev/tpu.test" -test.v -test.timeout 530s \
		-test.skip 'TestONNXNodeSuiteLowered' \
		-test.bench '^BenchmarkDeviceGPTBench$' -test.benchtime 20x) > "$log" 2>&1
	local rc=$?
	set -e
	grep -E '^(--- (FAIL|SKIP)|FAIL|ok|PASS)' "$log" | grep -v -- '--- PASS' | head -40 || true
	echo
	echo "== table"
	grep '^TABLE' "$log" | sed 's/^TABLE //' || true
	awk '/^BenchmarkDeviceGPTBench\/method=/ {
			split($1, a, "="); sub(/-[0-9]+$/, "", a[2]); ms[a[2]] = $3 / 1e6
			printf "gpt_bench 16x128 AdamW %-4s %8.2f ms/step (%s steps)\n", a[2], ms[a[2]], $2
		}
		END { if (ms["full"] > 0 && ms["dst"] > 0) printf "gpt_bench DST overhead %+.2f %% (target <= 2 %%)\n", (ms["dst"] / ms["full"] - 1) * 100 }' "$log"
	echo "== full log: $log (exit $rc)"
	return $rc
}

case "${1:-run}" in
prepare) prepare ;;
run) run ;;
*) echo "usage: $0 [prepare|run]" >&2; exit 2 ;;
esac
