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
  functions.onnx               the opset-17 export with every module kept as a
                               model-local function (export_modules_as_functions:
                               RMSNorm, Attention, MLP and Block, nested)
  float64.onnx                 a smaller float64 model of the variant (opset 17), for
                               checks by finite differences
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

THETA, EPS, WINDOW = 10000.0, 1e-5, 4


class Config:
    def __init__(self, vocab, dim, hidden):
        self.vocab, self.dim, self.hidden = vocab, dim, hidden
        self.layers, self.heads, self.kv_heads = 2, 4, 2
        self.head_dim = dim // self.heads


# The float32 models; the float64 ones (for finite differences) are smaller.
FLOAT32, FLOAT64 = Config(96, 32, 48), Config(32, 16, 24)


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
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.wq = nn.Linear(c.dim, c.heads * c.head_dim, bias=False)
        self.wk = nn.Linear(c.dim, c.kv_heads * c.head_dim, bias=False)
        self.wv = nn.Linear(c.dim, c.kv_heads * c.head_dim, bias=False)
        self.wo = nn.Linear(c.heads * c.head_dim, c.dim, bias=False)

    def forward(self, x, cos, sin, mask):
        c = self.c
        b, s, _ = x.shape
        q = self.wq(x).view(b, s, c.heads, c.head_dim).transpose(1, 2)
        k = self.wk(x).view(b, s, c.kv_heads, c.head_dim).transpose(1, 2)
        v = self.wv(x).view(b, s, c.kv_heads, c.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = repeat_kv(k, c.heads // c.kv_heads)
        v = repeat_kv(v, c.heads // c.kv_heads)
        scores = q @ k.transpose(-1, -2) / math.sqrt(c.head_dim) + mask
        probs = F.softmax(scores, dim=-1)
        out = (probs @ v).transpose(1, 2).reshape(b, s, c.heads * c.head_dim)
        return self.wo(out)


class MLP(nn.Module):
    def __init__(self, c, gelu):
        super().__init__()
        self.w1 = nn.Linear(c.dim, c.hidden, bias=False)
        self.w3 = nn.Linear(c.dim, c.hidden, bias=False)
        self.w2 = nn.Linear(c.hidden, c.dim, bias=False)
        self.gelu = gelu

    def forward(self, x):
        gate = self.w1(x)
        gate = F.gelu(gate, approximate="tanh") if self.gelu else F.silu(gate)
        return self.w2(gate * self.w3(x))


class Block(nn.Module):
    def __init__(self, c, layer, gelu):
        super().__init__()
        self.attention_norm = RMSNorm(c.dim, divide=layer % 2 == 1)
        self.attention = Attention(c)
        self.ffn_norm = RMSNorm(c.dim, divide=layer % 2 == 0)
        self.feed_forward = MLP(c, gelu)

    def forward(self, x, cos, sin, mask):
        x = x + self.attention(self.attention_norm(x), cos, sin, mask)
        return x + self.feed_forward(self.ffn_norm(x))


class Llama(nn.Module):
    def __init__(self, c, variant):
        super().__init__()
        self.c, self.variant = c, variant
        gelu = variant == "geglu_sliding"
        self.tok_embeddings = nn.Embedding(c.vocab, c.dim)
        nn.init.normal_(self.tok_embeddings.weight, std=0.3)
        self.layers = nn.ModuleList([Block(c, i, gelu) for i in range(c.layers)])
        self.norm = RMSNorm(c.dim, divide=False)
        self.tied = gelu
        if not self.tied:
            self.output = nn.Linear(c.dim, c.vocab, bias=False)

    def forward(self, tokens):
        s, hd = tokens.shape[1], self.c.head_dim
        dtype = self.tok_embeddings.weight.dtype
        h = self.tok_embeddings(tokens)
        positions = torch.arange(s, dtype=dtype)
        inv_freq = 1.0 / (THETA ** (torch.arange(0, hd, 2, dtype=dtype) / hd))
        freqs = positions[:, None] * inv_freq[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)
        cos, sin = angles.cos(), angles.sin()
        if self.variant == "swiglu_causal":
            mask = torch.full((s, s), float("-inf"), dtype=dtype).triu(1)
        else:
            i = torch.arange(s)[:, None]
            j = torch.arange(s)[None, :]
            allowed = (j < i + 1) & (j > i - WINDOW)
            mask = torch.where(allowed, torch.tensor(0.0, dtype=dtype), torch.tensor(torch.finfo(dtype).min, dtype=dtype))
        for layer in self.layers:
            h = layer(h, cos, sin, mask)
        h = self.norm(h)
        if self.tied:
            return F.linear(h, self.tok_embeddings.weight)
        return self.output(h)


def save_tensor(path, array):
    with open(path, "wb") as f:
        f.write(numpy_helper.from_array(array).SerializeToString())


def export(model, tokens, path, opset, functions=False):
    torch.onnx.export(
        model, (tokens,), path,
        input_names=["tokens"], output_names=["logits"],
        dynamic_axes={"tokens": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}},
        opset_version=opset, do_constant_folding=False,
        export_modules_as_functions={RMSNorm, Attention, MLP, Block} if functions else False)


def make(variant, seed):
    out = os.path.join("testdata", variant)
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(seed + 100)
    export(Llama(FLOAT64, variant).double(), torch.randint(0, FLOAT64.vocab, (2, 6)), os.path.join(out, "float64.onnx"), 17)
    torch.manual_seed(seed)
    model = Llama(FLOAT32, variant)
    tokens = torch.randint(0, FLOAT32.vocab, (2, 12))
    for opset in (14, 17):
        export(model, tokens, os.path.join(out, f"opset{opset}.onnx"), opset)
    export(model, tokens, os.path.join(out, "functions.onnx"), 17, functions=True)
    logits = model(tokens)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, FLOAT32.vocab), tokens[:, 1:].reshape(-1))
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
