"""ComfyUI glue for the flow samplers: the k-diffusion-style sampler functions and their registration."""
from __future__ import annotations

import inspect

import comfy.k_diffusion.sampling as k_diffusion_sampling
import comfy.model_sampling
import comfy.samplers

import torch

from ..samplers import DEFAULT_ETA, sample_flow
from ..samplers.solvers import DETERMINISTIC_STOCK_SAMPLERS

# KSampler dropdown name → step rule
KSAMPLER_RULES = {
    "flow_cps": "cps",
    "flow_cpws": "cpws",
    "flow_precise": "precise",
    "flow_sde": "flow_sde",
    "dance_sde": "dance_sde",
}
SUPPORTED_MODELS = ("SD3/SD3.5, Flux, Qwen-Image, HiDream, Lumina 2, AuraFlow, Chroma, Wan and any other "
                    "rectified-flow model (model_sampling CONST)")


class NotAFlowModelError(ValueError):
    __module__ = "flow_cps"  # ComfyUI shows f"{__module__}.{name}" as the error type; the real one is a folder path


def _prediction_name(model_sampling) -> str:
    for cls in (comfy.model_sampling.EDM, comfy.model_sampling.V_PREDICTION, comfy.model_sampling.X0,
                comfy.model_sampling.EPS):
        if isinstance(model_sampling, cls):
            return cls.__name__
    return type(model_sampling).__name__


def _defining_class(model_sampling, method: str):
    return next((cls for cls in type(model_sampling).__mro__ if method in vars(cls)), None)


def require_flow_model(model_sampling, sampler_name: str) -> None:
    """Raise a clear error unless ``model_sampling`` is a rectified-flow one (x_t = (1 − t)·x0 + t·noise, x̂0 =
    x_t − t·v): a CONST whose denoised prediction and noising are CONST's own. ``IMG_TO_IMG_FLOW`` (newer ComfyUI)
    subclasses CONST but its model predicts the image directly and its latent is not noised, so it is refused."""
    if isinstance(model_sampling, comfy.model_sampling.CONST):
        overridden = [m for m in ("calculate_denoised", "noise_scaling")
                      if _defining_class(model_sampling, m) not in (comfy.model_sampling.CONST, None)]
        if not overridden:
            return
        kind = _defining_class(model_sampling, overridden[0]).__name__
        raise NotAFlowModelError(
            f"{sampler_name} needs a rectified-flow model whose output is the flow velocity (x̂0 = x − t·v). This "
            f"model's sampling ({kind}) subclasses ComfyUI's CONST but replaces {' and '.join(overridden)}, so its "
            "prediction is not the flow x̂0 these step rules and log-probabilities assume. Use the stock samplers "
            "that ship with this model type (e.g. euler).")
    raise NotAFlowModelError(
        f"{sampler_name} only works with flow-matching models: {SUPPORTED_MODELS}. This model uses "
        f"{_prediction_name(model_sampling)} prediction (e.g. SD1.5, SD2, SDXL), whose noise schedule these "
        "samplers cannot preserve. Pick a stock sampler such as euler_ancestral or dpmpp_2m_sde for it, or load a "
        "flow model.")


def noise_scale(model_sampling) -> float:
    """The std of the model's noise prior: ``model_sampling.noise_scale`` where the host has it (HiDream-O1, the
    ModelNoiseScale node), else 1. The stock samplers scale their fresh noise by it; so do ours."""
    return float(getattr(model_sampling, "noise_scale", 1.0))


def make_sampler_function(name: str, rule: str):
    """A ComfyUI sampler function ``fn(model, x, sigmas, extra_args, callback, disable, **options)`` for ``rule``.

    Options: ``eta`` (float or one value per step), ``window`` ((first, stop) stochastic steps; ODE elsewhere).
    The step noise comes from a stream seeded from the prompt's seed and the step index, never from the stream
    that made the initial noise.
    """
    default_eta = DEFAULT_ETA[rule]

    def sampler_function(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=default_eta,
                         window=None, eta_schedule=None):
        extra_args = {} if extra_args is None else extra_args
        model_sampling = model.inner_model.inner_model.model_sampling
        require_flow_model(model_sampling, name)
        seed = extra_args.get("seed", 0)
        s_in = x.new_ones([x.shape[0]])

        def denoise(x_t, t):
            return model(x_t, t * s_in, **extra_args)

        steps = len(sigmas) - 1
        etas = eta if eta_schedule is None else eta_schedule.for_steps(steps)
        if window is not None:
            first, stop = window
            stop = min(stop, steps)
            if first >= stop:
                raise ValueError(f"{name}: the SDE window starts at step {first} but the schedule has only {steps} "
                                 "steps, so no step would be stochastic. Lower sde_start_step.")
            window = (first, stop)
        return sample_flow(denoise, x, sigmas, rule=rule, eta=etas, window=window, seed=seed, callback=callback,
                           noise_scale=noise_scale(model_sampling))

    sampler_function.__name__ = f"sample_{name}"
    sampler_function.__doc__ = f"flow-cps {rule} sampler for ComfyUI (see samplers.rules)."
    return sampler_function


SAMPLER_FUNCTIONS = {name: make_sampler_function(name, rule) for name, rule in KSAMPLER_RULES.items()}


def register_ksampler_names() -> None:
    """Add the flow samplers to the stock KSampler / KSamplerSelect dropdowns (idempotent).

    The lists are extended in place: KSampler.SAMPLERS is the same object as comfy.samplers.SAMPLER_NAMES.
    """
    for name, fn in SAMPLER_FUNCTIONS.items():
        setattr(k_diffusion_sampling, f"sample_{name}", fn)
        for names in (comfy.samplers.KSAMPLER_NAMES, comfy.samplers.SAMPLER_NAMES):
            if name not in names:
                names.append(name)


def sampler_accepts_eta(sampler_name: str) -> bool:
    """Whether a KSampler-dropdown sampler takes an ``eta`` option (used by the comparison grid)."""
    fn = getattr(k_diffusion_sampling, f"sample_{sampler_name}", None)
    return fn is not None and "eta" in inspect.signature(fn).parameters


def ksampler_object(sampler_name: str, eta: float | None = None):
    """A SAMPLER for a dropdown name, with ``eta`` passed through when the sampler takes one."""
    if sampler_name not in comfy.samplers.SAMPLER_NAMES:
        raise ValueError(f"unknown sampler {sampler_name!r}; valid names: {', '.join(comfy.samplers.SAMPLER_NAMES)}")
    if eta is None or not sampler_accepts_eta(sampler_name):
        return comfy.samplers.sampler_object(sampler_name)
    return comfy.samplers.ksampler(sampler_name, {"eta": eta})


class _SolverModel:
    """What a k-diffusion sampler function calls: ``model(x, sigma, **extra) -> x̂0`` through the trainer's denoise
    (per-prompt conditioning, CFG, LoRA as enabled), with ``inner_model`` the guider as in ``KSamplerX0Inpaint``
    (samplers read the model's sampling from it)."""

    def __init__(self, denoise_fn, guider):
        self.denoise_fn, self.inner_model = denoise_fn, guider

    def __call__(self, x, sigma, **extra_args):
        return self.denoise_fn(x, float(sigma.flatten()[0]))


def stock_solver(guider, name: str, deterministic: bool):
    """A ComfyUI stock sampler as a samplers.solvers solver ``(denoise_fn, x, times, callback, seed) -> x``: its own
    sampler function (``comfy.samplers.sampler_object``) on these sigmas, from x as given (already at times[0]).
    ``deterministic`` (outside a MixGRPO window) admits only the ODE solvers."""
    if name not in comfy.samplers.KSAMPLER_NAMES:
        raise ValueError(f"unknown sampler {name!r} for the trainer; this ComfyUI has: "
                         f"{', '.join(comfy.samplers.KSAMPLER_NAMES)}")
    if deterministic and name not in DETERMINISTIC_STOCK_SAMPLERS:
        raise ValueError(f"{name!r} draws noise, so it cannot integrate the deterministic steps outside the SDE window: "
                         f"choose one of {', '.join(n for n in DETERMINISTIC_STOCK_SAMPLERS if n in comfy.samplers.KSAMPLER_NAMES)}")
    if name.endswith("_cfg_pp"):
        raise ValueError(f"{name!r} changes the guidance itself, which the trainer applies: choose the sampler without "
                         "_cfg_pp")
    sampler = comfy.samplers.sampler_object(name)

    def solve(denoise_fn, x, times, callback=None, seed=None):
        sigmas = torch.tensor([float(t) for t in times], dtype=torch.float32, device=x.device)
        extra = {} if seed is None else {"seed": int(seed)}
        return sampler.sampler_function(_SolverModel(denoise_fn, guider), x, sigmas, extra_args=extra,
                                        callback=callback, disable=True, **sampler.extra_options)

    solve.__name__ = f"comfy_{name}"
    return solve
