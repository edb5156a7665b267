"""The sampling loop shared by the analytic tests, the toy model, ComfyUI's samplers and the GRPO trainer."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Tuple, Union

import torch

from .logprob import log_prob
from .noise import StepNoise
from .rules import DEFAULT_ETA, _step_compute, check_eta, check_rule, coefficients

DenoiseFn = Callable[[torch.Tensor, float], torch.Tensor]
NoiseFn = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass
class Trajectory:
    """What a GRPO trainer needs from a rollout; index i is the step from ``times[i]`` to ``times[i + 1]``.

    ``latents[i]`` is x entering step i, ``samples[i]`` the x it produced (dtype of x), ``means[i]`` the
    transition mean in float32 and ``stds[i]`` its float32 std; ``rules[i]`` the rule actually applied (``ode``
    outside the SDE window and on a deterministic last step).
    """

    times: list = field(default_factory=list)
    latents: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    means: list = field(default_factory=list)
    stds: list = field(default_factory=list)
    etas: list = field(default_factory=list)
    rules: list = field(default_factory=list)

    @property
    def stochastic_steps(self) -> list:
        """Indices of the steps that drew noise (std > 0): the only ones a trainer can use."""
        return [i for i, s in enumerate(self.stds) if bool((s > 0).all())]

    def log_probs(self, kind: str = "gaussian") -> torch.Tensor:
        """Log-probabilities of the recorded stochastic steps, shape [n_stochastic, B]."""
        steps = self.stochastic_steps
        if not steps:
            raise ValueError("this trajectory has no stochastic step: nothing to compute a log-prob for")
        return torch.stack([log_prob(self.samples[i], self.means[i], self.stds[i], kind=kind) for i in steps])


def per_step_eta(rule: str, eta, steps: int) -> list:
    """Expand a scalar or per-step η into ``steps`` floats, validated for ``rule``."""
    if eta is None:
        eta = DEFAULT_ETA[rule]
    if torch.is_tensor(eta):
        eta = eta.tolist() if eta.dim() else float(eta)
    if isinstance(eta, (int, float)):
        etas = [float(eta)] * steps
    else:
        etas = [float(e) for e in eta]
        if len(etas) != steps:
            raise ValueError(f"per-step eta has {len(etas)} values but the schedule has {steps} steps")
    for e in etas:
        check_eta(rule, e)
    return etas


def check_window(window: Optional[Tuple[int, int]], steps: int) -> Tuple[int, int]:
    """Validate an SDE window ``(first, stop)``: steps first … stop−1 are stochastic (Python range semantics)."""
    if window is None:
        return 0, steps
    first, stop = (int(w) for w in window)
    if not 0 <= first < stop <= steps:
        raise ValueError(f"SDE window {tuple(window)} must satisfy 0 <= first < stop <= {steps} (number of steps)")
    return first, stop


def schedule_times(times) -> list:
    """Validate a flow-time schedule and return it as Python floats (one host sync, before sampling)."""
    values = [float(v) for v in (times.tolist() if torch.is_tensor(times) else times)]
    if len(values) < 2:
        raise ValueError("a schedule needs at least two times (start and end)")
    if not 0 < values[0] <= 1:
        raise ValueError(f"the schedule must start in (0, 1] (flow time, 1 = pure noise); it starts at {values[0]:g}")
    if any(b >= a for a, b in zip(values, values[1:])) or values[-1] < 0:
        raise ValueError(f"the schedule must decrease strictly and end >= 0; got {[round(v, 5) for v in values]}")
    return values


def _step_rule(rule: str, i: int, window: Tuple[int, int], eta: float, t_next: float, denoise_last_step: bool) -> str:
    """The rule :func:`sample_flow` uses at step i: ``rule`` inside the window with η > 0, else the ODE."""
    first, stop = window
    if not (first <= i < stop and eta > 0) or (denoise_last_step and t_next == 0):
        return "ode"
    return rule


def step_stds(times, *, rule: str = "cps", eta=None, window: Optional[Tuple[int, int]] = None,
              denoise_last_step: Optional[bool] = None) -> list:
    """The noise std of every step :func:`sample_flow` takes with these settings (0.0 for a deterministic step),
    known before sampling, in units of the initial noise (multiply by ``noise_scale``)."""
    check_rule(rule)
    ts = schedule_times(times)
    etas = per_step_eta(rule, eta, len(ts) - 1)
    bounds = check_window(window, len(ts) - 1)
    if denoise_last_step is None:
        denoise_last_step = rule == "dance_sde"
    stds = []
    for i, (t, t_next) in enumerate(zip(ts[:-1], ts[1:])):
        step_rule = _step_rule(rule, i, bounds, etas[i], t_next, denoise_last_step)
        std = 0.0 if step_rule == "ode" else float(torch.tensor(coefficients(step_rule, t, t_next, etas[i])[1],
                                                                dtype=torch.float32))
        stds.append(max(std, 0.0))
    return stds


def stochastic_steps(times, *, rule: str = "cps", eta=None, window: Optional[Tuple[int, int]] = None,
                     denoise_last_step: Optional[bool] = None) -> list:
    """The steps :func:`sample_flow` with these settings makes stochastic (std > 0), known before sampling: the
    Trajectory's ``stochastic_steps`` equal these. A step into t' = 0 is deterministic for CPS, CPWS and Precise
    (std = t'·…) and for Dance-SDE (it ends with x̂0); Flow-SDE keeps its last-step noise."""
    stds = step_stds(times, rule=rule, eta=eta, window=window, denoise_last_step=denoise_last_step)
    return [i for i, std in enumerate(stds) if std > 0]


@torch.no_grad()
def sample_flow(denoise_fn: DenoiseFn, x: torch.Tensor, times, *, rule: str = "cps",
                eta: Union[float, Sequence[float], torch.Tensor, None] = None,
                window: Optional[Tuple[int, int]] = None, noise: Optional[NoiseFn] = None,
                seed: Union[int, Sequence[int], None] = None, callback: Optional[Callable] = None,
                record: bool = False, denoise_last_step: Optional[bool] = None, noise_scale: float = 1.0,
                ode_solver: Optional[Callable] = None):
    """Sample a flow-matching model with one of the step rules of :mod:`samplers.rules`.

    ``denoise_fn(x, t)`` returns x̂0 for a float flow time ``t``; ``x`` is already noised to ``times[0]``;
    ``times`` decreases (e.g. from :func:`samplers.schedules.flow_schedule`). ``eta`` is a float or one value
    per step (default: the rule's :data:`DEFAULT_ETA`). Steps outside ``window = (first, stop)`` use the ODE rule.
    Step noise comes from ``noise(i, x)``; by default from :class:`StepNoise` (``seed``), which is reproducible and
    independent of the initial noise; with neither, from torch's global generator.

    ``denoise_last_step`` (default: on for ``dance_sde`` only) makes a step that ends at t = 0 return x̂0, as
    DanceGRPO decodes it; Flow-SDE keeps its residual last-step noise by default, which is the artifact CPS removes.
    ``noise_scale`` s: the model's noise prior is N(0, s²) (ComfyUI's ``model_sampling.noise_scale``: HiDream-O1,
    the ModelNoiseScale node). Every rule's fresh noise and std are multiplied by s and the mean is unchanged, so
    the coefficient-preserving rules keep the scheduled noise t'·s; the recorded std includes s.
    ``callback`` receives ``{"x", "i", "sigma", "sigma_hat", "denoised"}`` once per step (k-diffusion's contract).
    ``ode_solver`` (MixGRPO-Flash, arXiv 2507.21802): a :mod:`samplers.solvers` solver that integrates every run of
    deterministic steps (outside the window, η = 0, a deterministic last step) in one call, e.g. DPM-Solver++(2M)
    or a stock ComfyUI sampler; a multistep solver's history starts afresh at each run. Default: the ODE rule.
    Returns the final x, or ``(x, Trajectory)`` with ``record=True``; a solver's steps are recorded with std 0 and
    rule ``"ode"``.
    """
    check_rule(rule)
    ts = schedule_times(times)
    steps = len(ts) - 1
    etas = per_step_eta(rule, eta, steps)
    first, stop = check_window(window, steps)
    noise_scale = float(noise_scale)
    if not noise_scale > 0:
        raise ValueError(f"noise_scale must be > 0, got {noise_scale}")
    if denoise_last_step is None:
        denoise_last_step = rule == "dance_sde"
    if noise is None:
        noise = StepNoise(seed) if seed is not None else (lambda i, like: torch.randn_like(like, dtype=torch.float32))
    trajectory = Trajectory(times=ts) if record else None

    rules = [_step_rule(rule, i, (first, stop), etas[i], ts[i + 1], denoise_last_step) for i in range(steps)]
    i = 0
    while i < steps:
        if ode_solver is not None and rules[i] == "ode":
            end = i
            while end < steps and rules[end] == "ode":
                end += 1
            x = _solve_run(ode_solver, denoise_fn, x, ts, i, end, callback, trajectory)
            i = end
            continue
        t, t_next = ts[i], ts[i + 1]
        denoised = denoise_fn(x, t)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": t, "sigma_hat": t, "denoised": denoised})
        step_rule = rules[i]
        eps = noise(i, x) if step_rule != "ode" else None
        if eps is not None and noise_scale != 1.0:
            eps = eps * noise_scale
        sample, mean, std = _step_compute(step_rule, x, denoised, t, t_next, eta=etas[i], noise=eps)
        if noise_scale != 1.0:
            std = std * noise_scale
        x_next = sample.to(x.dtype)
        if record:
            trajectory.latents.append(x)
            trajectory.samples.append(x_next)
            trajectory.means.append(mean)
            trajectory.stds.append(std)
            trajectory.etas.append(etas[i] if step_rule != "ode" else 0.0)
            trajectory.rules.append(step_rule)
        x = x_next
        i += 1
    return (x, trajectory) if record else x


def _solve_run(ode_solver, denoise_fn, x, ts, first: int, end: int, callback, trajectory):
    """Steps first … end−1 by ``ode_solver`` in one call; records each step's entering latent (from the solver's
    callback) when ``trajectory`` is given."""
    entering = []

    def on_step(info):
        entering.append(info["x"])
        if callback is not None:
            callback({**info, "i": first + int(info["i"])})

    x_end = ode_solver(denoise_fn, x, ts[first:end + 1], callback=on_step).to(x.dtype)
    if trajectory is not None:
        if len(entering) != end - first:
            raise RuntimeError(f"the ODE solver reported {len(entering)} steps for a run of {end - first}: it must "
                               "call its callback once per step (k-diffusion's contract)")
        for k, latent in enumerate(entering):
            sample = entering[k + 1] if k + 1 < len(entering) else x_end
            trajectory.latents.append(latent)
            trajectory.samples.append(sample)
            trajectory.means.append(sample.float())
            trajectory.stds.append(torch.zeros((), dtype=torch.float32))
            trajectory.etas.append(0.0)
            trajectory.rules.append("ode")
    return x_end
