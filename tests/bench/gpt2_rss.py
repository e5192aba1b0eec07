#!/usr/bin/python3
"""A GPT-2-small-shaped language model for comparing a training step's
peak memory with PyTorch's.

    /usr/bin/python3 gpt2_rss.py export BENCH_DIR OUT_DIR
    OMP_NUM_THREADS=N OPENBLAS_NUM_THREADS=N /usr/bin/python3 gpt2_rss.py torch BENCH_DIR OUT_DIR N [STEPS]

BENCH_DIR is testdata/bench: its make_bench.py's GPTLike (learned
positions, pre-LN nn.TransformerEncoder layers with a causal mask, final
LayerNorm, LM head tied to the token embedding, N(0, 0.02) init) is built
at GPT-2 small's size: vocabulary 50257, width 768, 12 layers, 12 heads,
MLP 3072, 256 positions (124 M parameters). `export` writes
OUT_DIR/gpt2s.onnx (exported as make_bench.py exports gpt_bench) and
OUT_DIR/train.jsonl (16 rows of 256 random tokens). `torch` trains STEPS
(2) full fine-tuning steps of batch 4×256 on them with AdamW (lr 1e-4), as
time_torch.py's step does, and prints the step times and the process's
peak resident memory:

    # step ms: ...
    # peak rss MiB: ...
"""
import json
import os
import resource
import sys
import time

import torch


def setup(bench):
    sys.dont_write_bytecode = True
    sys.path.insert(0, bench)
    import make_bench as mb
    mb.V, mb.D, mb.H, mb.FF, mb.L, mb.T = 50257, 768, 12, 3072, 12, 256
    return mb


def main():
    mode, bench, out = sys.argv[1], sys.argv[2], sys.argv[3]
    mb = setup(bench)
    if mode == "export":
        os.makedirs(out, exist_ok=True)
        model = mb.build("gpt")
        print("# parameters: %d" % sum(p.numel() for p in model.parameters()))
        mb.export(model, os.path.join(out, "gpt2s.onnx"), {0: "batch", 1: "seq"})
        g = torch.Generator().manual_seed(0)
        with open(os.path.join(out, "train.jsonl"), "w") as f:
            for _ in range(16):
                f.write(json.dumps({"tokens": torch.randint(0, mb.V, (mb.T,), generator=g).tolist()}) + "\n")
        return
    if mode != "torch":
        sys.exit("mode must be export or torch")
    nt = int(sys.argv[4])
    steps = int(sys.argv[5]) if len(sys.argv) > 5 else 2
    torch.set_num_threads(nt)
    model = mb.build("gpt")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = [json.loads(l)["tokens"] for l in open(os.path.join(out, "train.jsonl"))]
    times = []
    for i in range(steps):
        x = torch.tensor(rows[4 * i:4 * i + 4], dtype=torch.int64)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model.loss(x)
        loss.backward()
        opt.step()
        loss.item()
        times.append(1e3 * (time.perf_counter() - t0))
    print("# step ms: " + " ".join("%.0f" % t for t in times))
    print("# peak rss MiB: %.0f" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


if __name__ == "__main__":
    main()
