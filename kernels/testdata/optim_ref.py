"""Writes optim_ref.json: reference steps of torch.optim.AdamW and
torch.optim.SGD for the kernels' optimizer tests.

Run with Debian bookworm's python3-torch 1.13.1 (the version the training
engine is compared with):  /usr/bin/python3 optim_ref.py
Every float32 is stored as its bit pattern (8 hex digits) so the test can
compare bits.
"""
import json

import numpy as np
import torch

N = 515  # not a multiple of any vector width
STEPS = 3


def bits(t):
    return [format(int(x), "08x") for x in t.detach().numpy().astype(np.float32).view(np.uint32)]


def data(seed):
    g = torch.Generator().manual_seed(seed)
    p0 = torch.randn(N, generator=g) * 0.02
    p0[:8] = torch.tensor([0.0, -0.0, 1e-40, -1e-40, 1.0, -1.0, 3e-38, 1e-20])
    grads = [torch.randn(N, generator=g) * 10 ** float(torch.randint(-6, 1, (1,), generator=g)) for _ in range(STEPS)]
    for gr in grads:
        gr[8:12] = torch.tensor([0.0, -0.0, 1e-30, 1e20])
    return p0, grads


def run(name, make_opt, state_keys, seed):
    p0, grads = data(seed)
    p = p0.clone().requires_grad_(True)
    opt, hyper = make_opt(p)
    steps = []
    for gr in grads:
        p.grad = gr.clone()
        opt.step()
        st = opt.state[p]
        rec = {"param": bits(p)}
        for k in state_keys:
            rec[k] = bits(st[k])
        steps.append(rec)
    return {"name": name, "optimizer": hyper["optimizer"], "hyper": hyper, "param0": bits(p0),
            "grads": [bits(g) for g in grads], "steps": steps}


def adamw(lr, b1, b2, eps, wd):
    def make(p):
        return torch.optim.AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd), \
            {"optimizer": "adamw", "lr": lr, "beta1": b1, "beta2": b2, "eps": eps, "weight_decay": wd}
    return make


def sgd(lr, momentum, dampening, wd, nesterov):
    def make(p):
        return torch.optim.SGD([p], lr=lr, momentum=momentum, dampening=dampening, weight_decay=wd, nesterov=nesterov), \
            {"optimizer": "sgd", "lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": wd, "nesterov": nesterov}
    return make


cases = [
    run("adamw-default", adamw(1e-3, 0.9, 0.999, 1e-8, 0.01), ["exp_avg", "exp_avg_sq"], 1),
    run("adamw-large", adamw(0.05, 0.8, 0.99, 1e-6, 0.1), ["exp_avg", "exp_avg_sq"], 2),
    run("sgd-plain", sgd(0.1, 0.0, 0.0, 0.0, False), [], 3),
    run("sgd-momentum", sgd(0.05, 0.9, 0.1, 0.01, False), ["momentum_buffer"], 4),
    run("sgd-nesterov", sgd(0.05, 0.9, 0.0, 0.001, True), ["momentum_buffer"], 5),
]
with open("optim_ref.json", "w") as f:
    json.dump({"torch": torch.__version__, "n": N, "cases": cases}, f, separators=(",", ":"))
