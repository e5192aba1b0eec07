#!/usr/bin/python3
"""Builds the small Llama-style models in testdata/ and their PyTorch references.

Run with Debian's /usr/bin/python3 (torch 1.13, onnx 1.12) from this folder:

    /usr/bin/python3 make_llama.py

Each variant is a two-layer decoder written the way Llama-family code is,
exported by torch.onnx at opsets 14 and 17 without constant folding (so the
initializers keep the PyTorch parameter names):

  * rotary position embeddings computed in the graph from the sequence
    length: Range, Mul, Concat, Cos, Sin; applied rotate_half style (Slice,
    Neg, Concat);
  * RMSNorm spelled out: Pow, ReduceMean, Add, Sqrt, then Reciprocal and Mul
    (torch.rsqrt) or Div;
  * grouped-query attention, 4 query heads over 2 key/value heads repeated
    through Unsqueeze, Expand and Reshape;
  * swiglu_causal: a SiLU-gated MLP, a causal mask from torch.full and triu
    (ConstantOfShape, Trilu) with -inf, an untied LM head;
  * geglu_sliding: a tanh-GELU-gated MLP, a sliding-window causal mask (window
    4) from arange comparisons (Range, Less, Greater, And, Where) with the
    float32 minimum, the LM head tied to the token embedding.

For every variant it writes testdata/VARIANT/:

  opset14.onnx, opset17.onnx   the exports
  input_0.pb, output_0.pb      tokens int64 [2, 12] and the logits [2, 12, 96]
  loss.txt                     the mean next-token cross-entropy over positions 0..10
  grad_NAME.pb                 d loss / d NAME for every parameter
"""

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper

VOCAB, DIM, LAYERS, HEADS, KV_HEADS, HIDDEN = 96, 32, 2, 4, 2, 48
HEAD_DIM = DIM // HEADS
THETA, EPS, WINDOW = 10000.0, 1e-5, 4


class RMSNorm(nn.Module):
    def __init__(self, dim, divide):
        super().__init__()
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(dim))
        self.divide = divide

    def forward(self, x):
        mean_square = x.pow(2).mean(-1, keepdim=True)
        if self.divide:
            return x / torch.sqrt(mean_square + EPS) * self.weight
        return x * torch.rsqrt(mean_square + EPS) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def repeat_kv(x, groups):
    b, h, s, d = x.shape
    return x[:, :, None, :, :].expand(b, h, groups, s, d).reshape(b, h * groups, s, d)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.wq = nn.Linear(DIM, HEADS * HEAD_DIM, bias=False)
        self.wk = nn.Linear(DIM, KV_HEADS * HEAD_DIM, bias=False)
        self.wv = nn.Linear(DIM, KV_HEADS * HEAD_DIM, bias=False)
        self.wo = nn.Linear(HEADS * HEAD_DIM, DIM, bias=False)

    def forward(self, x, cos, sin, mask):
        b, s, _ = x.shape
        q = self.wq(x).view(b, s, HEADS, HEAD_DIM).transpose(1, 2)
        k = self.wk(x).view(b, s, KV_HEADS, HEAD_DIM).transpose(1, 2)
        v = self.wv(x).view(b, s, KV_HEADS, HEAD_DIM).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = repeat_kv(k, HEADS // KV_HEADS)
        v = repeat_kv(v, HEADS // KV_HEADS)
        scores = q @ k.transpose(-1, -2) / math.sqrt(HEAD_DIM) + mask
        probs = F.softmax(scores.float(), dim=-1).type_as(q)
        out = (probs @ v).transpose(1, 2).reshape(b, s, HEADS * HEAD_DIM)
        return self.wo(out)


class MLP(nn.Module):
    def __init__(self, gelu):
        super().__init__()
        self.w1 = nn.Linear(DIM, HIDDEN, bias=False)
        self.w3 = nn.Linear(DIM, HIDDEN, bias=False)
        self.w2 = nn.Linear(HIDDEN, DIM, bias=False)
        self.gelu = gelu

    def forward(self, x):
        gate = self.w1(x)
        gate = F.gelu(gate, approximate="tanh") if self.gelu else F.silu(gate)
        return self.w2(gate * self.w3(x))


class Block(nn.Module):
    def __init__(self, layer, gelu):
        super().__init__()
        self.attention_norm = RMSNorm(DIM, divide=layer % 2 == 1)
        self.attention = Attention()
        self.ffn_norm = RMSNorm(DIM, divide=layer % 2 == 0)
        self.feed_forward = MLP(gelu)

    def forward(self, x, cos, sin, mask):
        x = x + self.attention(self.attention_norm(x), cos, sin, mask)
        return x + self.feed_forward(self.ffn_norm(x))


class Llama(nn.Module):
    def __init__(self, variant):
        super().__init__()
        self.variant = variant
        gelu = variant == "geglu_sliding"
        self.tok_embeddings = nn.Embedding(VOCAB, DIM)
        nn.init.normal_(self.tok_embeddings.weight, std=0.3)
        self.layers = nn.ModuleList([Block(i, gelu) for i in range(LAYERS)])
        self.norm = RMSNorm(DIM, divide=False)
        self.tied = gelu
        if not self.tied:
            self.output = nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, tokens):
        s = tokens.shape[1]
        h = self.tok_embeddings(tokens)
        positions = torch.arange(s, dtype=torch.float32)
        inv_freq = 1.0 / (THETA ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float32) / HEAD_DIM))
        freqs = positions[:, None] * inv_freq[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)
        cos, sin = angles.cos(), angles.sin()
        if self.variant == "swiglu_causal":
            mask = torch.full((s, s), float("-inf")).triu(1)
        else:
            i = torch.arange(s)[:, None]
            j = torch.arange(s)[None, :]
            allowed = (j < i + 1) & (j > i - WINDOW)
            mask = torch.where(allowed, torch.tensor(0.0), torch.tensor(torch.finfo(torch.float32).min))
        for layer in self.layers:
            h = layer(h, cos, sin, mask)
        h = self.norm(h)
        if self.tied:
            return F.linear(h, self.tok_embeddings.weight)
        return self.output(h)


def save_tensor(path, array):
    with open(path, "wb") as f:
        f.write(numpy_helper.from_array(array).SerializeToString())


def make(variant, seed):
    torch.manual_seed(seed)
    model = Llama(variant)
    out = os.path.join("testdata", variant)
    os.makedirs(out, exist_ok=True)
    tokens = torch.randint(0, VOCAB, (2, 12))
    for opset in (14, 17):
        torch.onnx.export(
            model, (tokens,), os.path.join(out, f"opset{opset}.onnx"),
            input_names=["tokens"], output_names=["logits"],
            dynamic_axes={"tokens": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}},
            opset_version=opset, do_constant_folding=False)
    logits = model(tokens)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
    loss.backward()
    save_tensor(os.path.join(out, "input_0.pb"), tokens.numpy())
    save_tensor(os.path.join(out, "output_0.pb"), logits.detach().numpy())
    with open(os.path.join(out, "loss.txt"), "w") as f:
        f.write(f"{loss.item():.9g}\n")
    for name, p in model.named_parameters():
        save_tensor(os.path.join(out, f"grad_{name}.pb"), p.grad.numpy())


if __name__ == "__main__":
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    make("swiglu_causal", 1)
    make("geglu_sliding", 2)
