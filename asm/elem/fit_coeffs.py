#!/usr/bin/env python3
"""Fits the polynomial coefficients used by mathfuncs.go (not run by go generate).

Needs numpy and mpmath (Debian: python3-numpy python3-mpmath). Each fit is a
weighted minimax approximation found by Lawson's algorithm (iteratively
reweighted least squares) on 4000 Chebyshev nodes, weighted for relative error
of the final function, against mpmath at 40 digits. The printed values are
rounded to float32, as mathfuncs.go holds them; the float32 errors of the
finished kernels are measured by the tests in kernels/ (TestMathAccuracy).

    python3 fit_coeffs.py
"""
import mpmath as mp
import numpy as np

mp.mp.dps = 40


def lawson(xs, g, w, basis, iters=200):
    a = np.array([[b(x) for b in basis] for x in xs])
    u = np.ones(len(xs)) / len(xs)
    for _ in range(iters):
        sw = np.sqrt(u) * w
        c, *_ = np.linalg.lstsq(a * sw[:, None], g * sw, rcond=None)
        err = np.abs(w * (a @ c - g))
        u = u * err
        u /= u.sum()
    return c, err.max()


def cheb(lo, hi, n=4000):
    k = np.arange(n)
    return (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (k + 0.5) / n)


def powers(var_pow, count):
    return [lambda x, k=k: x ** (var_pow * k) for k in range(count)]


def show(name, c, err):
    vals = ", ".join(repr(float(np.float32(v))) for v in c)
    print(f"// max weighted error {err:.3g}\n{name} = []float32{{{vals}}}")


# exp(r) = 1 + r + r²·q(r) on |r| <= ln2/2, q of degree 4.
xs = cheb(-0.3466, 0.3466)
xs = xs[np.abs(xs) > 1e-6]
g = np.array([float((mp.exp(x) - 1 - x) / x**2) for x in xs])
c, e = lawson(xs, g, xs * xs / np.exp(xs), powers(1, 5))
show("expPoly", c, e)

# erf(x) = x + x·Q(x²) on |x| < 1, Q of degree 6 in x² (fitted as erf(x)/x,
# then 1 taken off the constant term so that the final FMA adds x exactly).
xs = cheb(1e-4, 1.0)
g = np.array([float(mp.erf(x) / x) for x in xs])
c, e = lawson(xs, g, 1 / g, powers(2, 7))
c[0] -= 1
show("erfSmallPoly", c, e)

# erfc(z) = t·Q(t)·exp(-z²), t = 1/(1 + p·z), on 0.5 <= z <= 10, Q of degree 8.
p = 0.4
zs = cheb(0.5, 10.0)
ts = 1 / (1 + p * zs)
g = np.array([float(mp.erfc(z) * mp.exp(z * z) * (1 + p * z)) for z in zs])
c, e = lawson(ts, g, 1 / g, powers(1, 9))
show("erfcTailPoly", c, e)

# tanh(x) = x + x³·P(x²) on |x| < 0.625, P of degree 5 in x².
xs = cheb(1e-3, 0.625)
g = np.array([float((mp.tanh(x) - x) / x**3) for x in xs])
w = np.array([float(x**3 / mp.tanh(x)) for x in xs])
c, e = lawson(xs, g, w, powers(2, 6))
show("tanhSmallPoly", c, e)
