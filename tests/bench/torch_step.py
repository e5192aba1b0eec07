#!/usr/bin/python3
"""Time PyTorch's training step of a benchmark model, in float32 or with
bfloat16 autocast, for stepbench (tests/bench/stepbench).

    OMP_NUM_THREADS=N OPENBLAS_NUM_THREADS=N /usr/bin/python3 torch_step.py BENCH_DIR MODEL N fp32|bf16

BENCH_DIR is testdata/bench (its make_bench.py builds the model and reads
the batches); MODEL is bert or gpt. The step is the one testdata/bench's
time_torch.py times: zero_grad(set_to_none) + forward + mean cross-entropy
+ backward + AdamW(lr 1e-4) step + loss.item(), step i on batch i % 8.
With bf16 the forward pass and the loss run inside
torch.autocast("cpu", dtype=torch.bfloat16), as PyTorch's documentation
recommends for CPU training; the weights, gradients and the optimizer stay
float32. WARMUP (3) untimed steps, then STEPS (10) timed ones. Prints, per
timed step, the wall time and the process CPU time in ms, and every loss:

    # wall ms: ...
    # cpu ms: ...
    # losses: ...
"""
import os
import sys
import time

import torch


def main():
    bench, kind, nt, precision = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    warm, steps = int(os.environ.get("WARMUP", 3)), int(os.environ.get("STEPS", 10))
    if precision not in ("fp32", "bf16"):
        sys.exit("precision must be fp32 or bf16")
    torch.set_num_threads(nt)
    sys.dont_write_bytecode = True
    sys.path.insert(0, bench)
    import make_bench as mb

    model = mb.build(kind)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = mb.read_batches(kind, bench)
    print("# torch %s threads=%d model=%s precision=%s" % (torch.__version__, torch.get_num_threads(), kind, precision))
    it, losses, walls, cpus = [0], [], [], []

    def step():
        x, y = batches[it[0] % len(batches)]
        it[0] += 1
        opt.zero_grad(set_to_none=True)
        if precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model.loss(x, y)
        else:
            loss = model.loss(x, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())

    for _ in range(warm):
        step()
    for _ in range(steps):
        c0, t0 = time.process_time(), time.perf_counter()
        step()
        t1, c1 = time.perf_counter(), time.process_time()
        walls.append(1e3 * (t1 - t0))
        cpus.append(1e3 * (c1 - c0))
    print("# wall ms: " + " ".join("%.2f" % t for t in walls))
    print("# cpu ms: " + " ".join("%.2f" % t for t in cpus))
    print("# losses: " + " ".join("%.6f" % l for l in losses))


if __name__ == "__main__":
    main()
