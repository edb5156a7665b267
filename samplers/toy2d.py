"""The 2-D double-ring toy of the Precise paper (arXiv 2605.23522), with an exact posterior mean.

Data: two concentric circles, radii ``RADII = (0.5, 1.0)``, equal mass, uniform in angle. Flow time as in
:mod:`samplers.rules`: x_t = (1 − t)·x0 + t·x1, x1 ~ N(0, I), so x_t | x0 ~ N(a·x0, t²I) with a = 1 − t.

Exact posterior mean (a "perfect model"). For a finite point set {d_i} it is the softmax formula

    E[x0 | x_t] = Σ_i softmax_i(−‖x_t − a·d_i‖² / (2t²)) · d_i                      (:func:`points_posterior_mean`)

and for the ring measure itself the sum over points on ring r becomes an integral over the angle θ. With
x_t = ρ·(cos φ, sin φ), ‖x_t − a r u(θ)‖² = ρ² + a²r² − 2 a r ρ cos(θ − φ), and ∫ e^{κ cos(θ−φ)} dθ/2π = I₀(κ),
∫ e^{κ cos(θ−φ)} u(θ) dθ/2π = I₁(κ)·u(φ) (modified Bessel functions), κ_r = a·r·ρ / t². Hence, exactly,

    E[x0 | x_t] = Σ_r w_r · r · I₁(κ_r)/I₀(κ_r) · x_t/ρ,
    w_r = softmax_r( log m_r − (ρ − a r)² / (2t²) + log(e^{−κ_r} I₀(κ_r)) )        (:func:`ring_posterior_mean`)

(m_r = ring mass; the ρ² term common to both rings is dropped and e^{κ} folded into the exponent, so it is stable
for t → 0 with the scaled Bessel functions ``i0e``/``i1e``). Limits: at t = 1 (a = 0) it is the data mean 0; as
t → 0 it is the point on the nearest ring in the direction of x_t.

Distances: :func:`energy_distance` (squared energy distance of Székely & Rizzo, V-statistic) and
:func:`radial_stats` (mean and spread of |x| overall and per ring). Pure torch; no ComfyUI imports.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import torch

RADII = (0.5, 1.0)


def double_ring(n: int, generator: Optional[torch.Generator] = None, radii: Sequence[float] = RADII,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` i.i.d. samples [n, 2] of the double-ring data: a ring chosen with equal probability, angle uniform."""
    ring = torch.randint(len(radii), (n,), generator=generator)
    theta = torch.rand(n, generator=generator, dtype=torch.float64) * (2 * math.pi)
    r = torch.tensor(radii, dtype=torch.float64)[ring]
    return torch.stack([r * theta.cos(), r * theta.sin()], dim=1).to(dtype)


def ring_points(per_ring: int, radii: Sequence[float] = RADII, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``per_ring`` equally spaced points on each ring (equal mass per ring): the quadrature of the ring measure."""
    theta = torch.arange(per_ring, dtype=torch.float64) * (2 * math.pi / per_ring)
    u = torch.stack([theta.cos(), theta.sin()], dim=1)
    return torch.cat([r * u for r in radii]).to(dtype)


def points_posterior_mean(x: torch.Tensor, t: float, points: torch.Tensor,
                          weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """E[x0 | x_t] for data = ``points`` [M, D] (optional masses): Σ_i softmax_i(−‖x_t − (1−t)d_i‖²/(2t²)) d_i."""
    a = 1.0 - float(t)
    log_w = torch.zeros(len(points), dtype=points.dtype) if weights is None else weights.to(points.dtype).log()
    d2 = torch.cdist(x.to(points.dtype), a * points, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    w = torch.softmax(log_w - d2 / (2 * float(t) ** 2), dim=1)
    return (w @ points).to(x.dtype)


def ring_posterior_mean(x: torch.Tensor, t: float, radii: Sequence[float] = RADII,
                        masses: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Exact E[x0 | x_t] [N, 2] for the uniform-angle ring measure (Bessel closed form, module docstring).

    ``x`` is [N, 2], ``t`` in (0, 1]; computed in float64 and returned in ``x``'s dtype.
    """
    t = float(t)
    if not 0 < t <= 1:
        raise ValueError(f"t must lie in (0, 1], got {t}")
    a = 1.0 - t
    xd = x.to(torch.float64)
    rho = xd.norm(dim=-1, keepdim=True)                                    # [N, 1]
    r = torch.tensor(radii, dtype=torch.float64)[None]                     # [1, R]
    m = torch.full_like(r, 1.0 / r.shape[1]) if masses is None else torch.tensor(masses, dtype=torch.float64)[None]
    kappa = a * r * rho / (t * t)
    i0e, i1e = torch.special.i0e(kappa), torch.special.i1e(kappa)
    w = torch.softmax(m.log() - (rho - a * r) ** 2 / (2 * t * t) + i0e.log(), dim=1)
    radius = (w * r * i1e / i0e).sum(dim=1, keepdim=True)                 # |E[x0 | x_t]|, along x_t
    return (radius * xd / rho.clamp_min(1e-300)).to(x.dtype)


def ring_denoiser(radii: Sequence[float] = RADII):
    """``denoise_fn(x, t) -> x̂0`` for :func:`samplers.sample_flow`: the exact posterior mean of the ring measure."""
    return lambda x, t: ring_posterior_mean(x, t, radii)


def _mean_pairwise_distance(a: torch.Tensor, b: torch.Tensor, chunk: int = 512) -> float:
    total = 0.0
    for i in range(0, len(a), chunk):  # direct float32 distances (no matmul shortcut), float64 sums
        d = torch.cdist(a[i:i + chunk], b, compute_mode="donot_use_mm_for_euclid_dist")
        total += float(d.sum(dtype=torch.float64))
    return total / (len(a) * len(b))


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Squared energy distance D² = 2·E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖ between samples ``a`` [N, D] and ``b`` [M, D].

    V-statistic (all pairs, diagonal included): exactly 0 for identical samples, always ≥ 0, and biased upwards by
    E‖X − X'‖/N + E‖Y − Y'‖/M, so compare against the value between two independent samples of the data of the same
    sizes (the noise floor). Zero in the population iff the distributions are equal (Székely & Rizzo 2013).
    """
    a, b = a.reshape(len(a), -1).float(), b.reshape(len(b), -1).float()
    return 2 * _mean_pairwise_distance(a, b) - _mean_pairwise_distance(a, a) - _mean_pairwise_distance(b, b)


def radial_stats(x: torch.Tensor, radii: Sequence[float] = RADII) -> Dict[str, float]:
    """Radial summary of 2-D samples: mean and std of |x| overall, and per ring.

    ``mean``/``std``: mean and population std of |x| (the radial variance is ``std``²). ``off_ring``:
    √mean((|x| − r_nearest)²), the distance to the nearest ring. Each point is assigned to its nearest ring (by |x|);
    per ring r: ``frac_r`` (share of points), ``mean_r`` (mean |x|) and ``rms_r`` = √mean((|x| − r)²), the spread
    around that ring's radius (bias included). The data have mean |x| = mean(radii) (0.75 for the default rings),
    std |x| = 0.25, frac_r = 0.5 and off_ring = rms_r = 0.
    """
    rho = x.reshape(len(x), -1).double().norm(dim=-1)
    r = torch.tensor(radii, dtype=torch.float64)
    nearest = (rho[:, None] - r[None]).abs().argmin(dim=1)
    off = rho - r[nearest]
    out = {"mean": float(rho.mean()), "std": float(rho.std(unbiased=False)), "off_ring": float((off ** 2).mean().sqrt())}
    for k, radius in enumerate(radii):
        sel = rho[nearest == k]
        out[f"frac_{radius:g}"] = len(sel) / len(rho)
        out[f"mean_{radius:g}"] = float(sel.mean()) if len(sel) else float("nan")
        out[f"rms_{radius:g}"] = float(((sel - radius) ** 2).mean().sqrt()) if len(sel) else float("nan")
    return out
