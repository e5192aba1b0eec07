#!/usr/bin/python3
"""PyTorch references for LoRA and prompt tuning on tiny_gpt.

Run with Debian's /usr/bin/python3 (torch 1.13, onnx 1.12) from this folder:

    /usr/bin/python3 make_reference.py [TESTDATA]

TESTDATA is the shared test data (default: $DSTUNE_TESTDATA, else
../../../shared/testdata). The script reads tiny_gpt's weights from
models/tiny_gpt/model.onnx and its tokens from test_data_set_0, writes the
model's forward pass in PyTorch (checked against the logits the model was
exported with), and adds the adapters with PEFT's semantics, written out
here since the peft package is not installed:

  * LoRA (peft/tuners/lora/layer.py, Linear.forward):
        result = base_layer(x) + lora_B(lora_A(dropout(x))) * scaling
    with scaling = lora_alpha / r, lora_A.weight [r, in], lora_B.weight
    [out, r], on c_attn, c_proj, mlp_fc and mlp_proj of both blocks (r = 4,
    lora_alpha = 8). B is not zero here (PEFT starts it at zero, where A
    gets no gradient), so that both matrices' gradients are checked.
    "lora" runs without dropout; "lora_dropout" with p = 0.25 and the keep
    masks written next to it (dropout(x) = x * mask / (1 - p)).
  * Prompt tuning: n virtual tokens P [n, 64] replace the token embeddings
    at positions 1..n (after-bos: the first token stays first) or 0..n-1
    (start), the positions run over all T + n, and the loss is taken on
    the logits of the real tokens only.

Everything is computed in float64; the loss is the mean next-token
cross-entropy over the real positions. For every case it writes
testdata/CASE/:

  NAME.pb         the adapter's values (float32 TensorProto named NAME, PEFT's key)
  grad_NAME.pb    d loss / d NAME
  mask_WEIGHT.pb  (lora_dropout) the keep mask of the adapter on WEIGHT (bool, the input's shape)
  loss.txt        the loss
"""

import math
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

HEADS, EPS = 4, 1e-5
RANK, ALPHA, DROPOUT = 4, 8.0, 0.25
MODULES = ["h.%d.%s" % (l, m) for l in range(2) for m in ("c_attn", "c_proj", "mlp_fc", "mlp_proj")]


def load(testdata):
    model = onnx.load(os.path.join(testdata, "models", "tiny_gpt", "model.onnx"))
    weights = {t.name: torch.tensor(numpy_helper.to_array(t), dtype=torch.float64) for t in model.graph.initializer}
    case = os.path.join(testdata, "models", "tiny_gpt", "test_data_set_0")
    tokens = torch.tensor(numpy_helper.to_array(onnx.load_tensor(os.path.join(case, "input_0.pb"))))
    logits = numpy_helper.to_array(onnx.load_tensor(os.path.join(case, "output_0.pb")))
    return weights, tokens, logits


class TinyGPT:
    """tiny_gpt's forward pass: learned positions, pre-LayerNorm blocks with
    packed q/k/v, causal attention, tanh-GELU MLP, final LayerNorm, the LM
    head tied to the token embedding."""

    def __init__(self, weights):
        self.w = weights
        self.lora = {}  # module -> (A, B, mask or None)

    def linear(self, x, name):
        y = x @ self.w[name + ".weight"].t() + self.w[name + ".bias"]
        if name in self.lora:
            a, b, mask = self.lora[name]
            if mask is not None:
                x = x * mask / (1 - DROPOUT)
            y = y + (x @ a.t()) @ b.t() * (ALPHA / RANK)
        return y

    def block(self, x, l, mask):
        p = "h.%d." % l
        h = F.layer_norm(x, x.shape[-1:], self.w[p + "ln_1.weight"], self.w[p + "ln_1.bias"], EPS)
        b, t, d = h.shape
        q, k, v = self.linear(h, p + "c_attn").split(d, dim=-1)
        q, k, v = (z.reshape(b, t, HEADS, d // HEADS).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(d // HEADS) + mask, dim=-1)
        x = x + self.linear((att @ v).transpose(1, 2).reshape(b, t, d), p + "c_proj")
        h = F.layer_norm(x, x.shape[-1:], self.w[p + "ln_2.weight"], self.w[p + "ln_2.bias"], EPS)
        h = F.gelu(self.linear(h, p + "mlp_fc"), approximate="tanh")
        return x + self.linear(h, p + "mlp_proj")

    def forward_embeddings(self, x):
        t = x.shape[1]
        pos = torch.arange(t)
        x = x + self.w["wpe.weight"][pos].unsqueeze(0)
        mask = torch.where(pos.unsqueeze(0) > pos.unsqueeze(1), torch.tensor(-math.inf, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))
        for l in range(2):
            x = self.block(x, l, mask)
        x = F.layer_norm(x, x.shape[-1:], self.w["ln_f.weight"], self.w["ln_f.bias"], EPS)
        return x @ self.w["wte.weight"].t()

    def forward(self, tokens):
        return self.forward_embeddings(self.w["wte.weight"][tokens])


def next_token_loss(logits, tokens):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def save(out, name, value):
    arr = value.detach().numpy()
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    t = numpy_helper.from_array(arr, name)
    with open(os.path.join(out, name + ".pb"), "wb") as f:
        f.write(t.SerializeToString())


def lora_case(weights, tokens, out, dropout):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20240917)
    model = TinyGPT(weights)
    params = []
    for name in MODULES:
        out_dim, in_dim = weights[name + ".weight"].shape
        bound = 1 / math.sqrt(in_dim)
        a = torch.tensor(rng.uniform(-bound, bound, (RANK, in_dim)).astype(np.float32), dtype=torch.float64, requires_grad=True)
        b = torch.tensor((0.1 * rng.standard_normal((out_dim, RANK))).astype(np.float32), dtype=torch.float64, requires_grad=True)
        mask = None
        if dropout:
            shape = (tokens.shape[0], tokens.shape[1], in_dim)
            keep = rng.random(shape) >= DROPOUT
            mask = torch.tensor(keep, dtype=torch.float64)
            save(out, "mask_" + name + ".weight", torch.tensor(keep))
        model.lora[name] = (a, b, mask)
        params += [("base_model.model.%s.lora_A.weight" % name, a), ("base_model.model.%s.lora_B.weight" % name, b)]
    loss = next_token_loss(model.forward(tokens), tokens)
    loss.backward()
    for key, p in params:
        save(out, key, p)
        save(out, "grad_" + key, p.grad)
    with open(os.path.join(out, "loss.txt"), "w") as f:
        f.write(repr(loss.item()) + "\n")


def prompt_case(weights, tokens, out, n, at):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20240918)
    model = TinyGPT(weights)
    d = weights["wte.weight"].shape[1]
    prompt = torch.tensor((0.1 * rng.standard_normal((n, d))).astype(np.float32), dtype=torch.float64, requires_grad=True)
    emb = weights["wte.weight"][tokens]
    p = prompt.unsqueeze(0).expand(tokens.shape[0], n, d)
    if at == "after-bos":
        logits = model.forward_embeddings(torch.cat([emb[:, :1], p, emb[:, 1:]], dim=1))
        logits = torch.cat([logits[:, :1], logits[:, 1 + n:]], dim=1)
    else:
        logits = model.forward_embeddings(torch.cat([p, emb], dim=1))[:, n:]
    loss = next_token_loss(logits, tokens)
    loss.backward()
    save(out, "prompt_embeddings", prompt)
    save(out, "grad_prompt_embeddings", prompt.grad)
    with open(os.path.join(out, "loss.txt"), "w") as f:
        f.write(repr(loss.item()) + "\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    testdata = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DSTUNE_TESTDATA", os.path.join(here, "..", "..", "..", "shared", "testdata"))
    weights, tokens, want = load(testdata)
    got = TinyGPT(weights).forward(tokens).numpy()
    err = np.abs(got - want).max()
    assert err < 1e-4, "the PyTorch forward pass is off tiny_gpt's logits by %g" % err
    data = os.path.join(here, "testdata")
    lora_case(weights, tokens, os.path.join(data, "lora"), dropout=False)
    lora_case(weights, tokens, os.path.join(data, "lora_dropout"), dropout=True)
    prompt_case(weights, tokens, os.path.join(data, "prompt_after_bos"), 5, "after-bos")
    prompt_case(weights, tokens, os.path.join(data, "prompt_start"), 3, "start")
    print("forward pass within %.2g of tiny_gpt's logits; references in %s" % (err, data))


if __name__ == "__main__":
    main()
