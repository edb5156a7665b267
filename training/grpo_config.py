"""GRPO configuration (TRL-style dataclass). Defaults follow the reference trainers (reference §3)."""
from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import List, Optional, Sequence, Tuple, Union

from ._host import samplers

# (field, lower bound, bound allowed, +inf allowed): +inf only where it means "no limit" (no clipping)
_FLOAT_RANGES = (("shift", 0.0, False, False), ("cfg", None, True, False), ("beta", 0.0, True, False),
                 ("kl_mask_threshold", 0.0, True, False), ("nft_beta", 0.0, False, False),
                 ("nft_kl_beta", 0.0, True, False), ("nft_decay_rate", 0.0, True, False),
                 ("nft_decay_max", 0.0, True, False),
                 ("clip_range", 0.0, False, True), ("advantage_clip", 0.0, False, True),
                 ("advantage_eps", 0.0, False, False), ("min_train_std", 0.0, True, False), ("lr", 0.0, True, False), ("weight_decay", 0.0, True, False),
                 ("max_grad_norm", 0.0, False, True), ("lora_alpha", 0.0, False, False))
_RANGE_HINTS = {
    "clip_range": " (the PPO ratio clip ε; 0 would stop every update: use e.g. 1e-4, or inf for no clipping)",
    "advantage_clip": " (advantages are clipped to ±this; 0 would zero them all: use e.g. 5, or inf for no clipping)",
    "max_grad_norm": " (0 would zero every gradient: use e.g. 1.0, or inf for no gradient clipping)",
    "beta": " (0 turns the KL term off)",
}

ADVANTAGE_STD_MODES = ("group", "global")
TIMESTEP_SELECTIONS = ("first", "random")
TRAIN_DTYPES = ("float32", "bfloat16", "float16")
KL_KINDS = ("gaussian", "mse")
WINDOW_SCHEDULES = ("fixed", "sliding", "progressive", "random")
ALGORITHMS = ("grpo", "diffusion_nft")
NFT_OLD_POLICIES = ("ema", "snapshot")


@dataclass
class GRPOConfig:
    """Settings of a GRPO run on a flow model.

    Sampling
        prompts: the training prompts; each iteration draws ``prompts_per_iteration`` of them (cycling in order).
        group_size: samples per prompt (G); advantages are normalised within each group (flow_grpo 24, DanceGRPO 12,
            Precise 8). Must be >= 2.
        steps / shift / schedule: the rollout schedule (``samplers.flow_schedule``).
        rule / eta: the step rule and its η (a float or one value per step, e.g. a calibrated schedule).
        sde_window: (first, stop) stochastic steps, ODE elsewhere; ``None`` = all steps stochastic.
        window_schedule (MixGRPO, arXiv 2507.21802): how the window of ``sde_window``'s size moves over the
            iterations: ``fixed`` (stays), ``sliding`` (``window_stride`` steps later every ``window_shift_every``
            iterations, wrapping around), ``progressive`` (the same moves from ``sde_window``'s start, but it stops at
            the last position instead of wrapping: MixGRPO's progressive strategy), ``random`` (a seeded random
            position each iteration). Moving windows skip positions with no step to train (e.g. only the
            deterministic step into t = 0). ``sliding_window = True`` is the older spelling of ``sliding``.
        ode_sampler: the deterministic solver of the steps outside the window: ``euler`` (the ODE rule) or
            DPM-Solver++(2M) ``dpmpp_2m`` (MixGRPO-Flash); inside ComfyUI any deterministic stock sampler.
        cfg: classifier-free guidance scale used in rollouts and training.
    Objective
        log_prob_kind: ``gaussian`` (per-element mean, flow_grpo/DanceGRPO) or ``cps_eq14`` (FlowCPS).
        kl_kind / beta: ``gaussian`` = mean(Δμ²)/(2σ²) (exact), ``mse`` = mean(Δμ²) (FlowCPS/Precise); β = 0 skips
            the reference forward pass. flow_grpo's KL is the exact one × Δt (its σ excludes √Δt): a β taken from a
            flow_grpo config means the same here divided by the step's Δt (e.g. β 0.04 at Δt 0.1 → 0.4).
        clip_range: PPO ε (flow_grpo uses 1e-4 with the per-element-mean log-prob); inf = no clipping.
        kl_mask_threshold: FlowDPPO's trust region (Tencent-Hunyuan/UniRL; δ 1e-5 there, 0 = off): a (sample, step)
            term whose exact KL(old ‖ new) = mean((μ_old − μ_θ)²)/(2σ²) reaches δ is dropped when its ratio already
            moved the way its advantage pushes. With clip_range = inf it replaces ratio clipping (as in UniRL),
            else it works beside it.
        ratio_norm: GRPO-Guard's ratio normalisation (arXiv 2510.22319): the log-ratio becomes
            σ·Δlog p + mean(Δμ²)/(2σ) = mean(z·Δμ), centred on 0 and on one scale at every step (``gaussian``
            log-prob only).
        advantage_std: ``group`` (DanceGRPO, Precise) or ``global`` (flow_grpo) std for normalisation;
            advantage_std_ddof / advantage_eps: 0 and 1e-4 (flow_grpo, Precise), 1 and 1e-8 for DanceGRPO's
            ``.std() + 1e-8``.
        advantage_clip: advantages are clipped to ±this value.
        timestep_selection / timestep_fraction: ``first``: the stochastic steps among the first ⌊N·fraction⌋ of all
            N steps (flow_grpo, 0.99: steps 0–8 of 10); ``random``: that fraction of the stochastic steps, drawn per
            iteration (DanceGRPO, 0.6).
        min_train_std: stochastic steps whose noise std (in units of the initial noise) is below this are sampled but
            not trained. The step into σ_min that ComfyUI's ``normal`` schedule and diffusers' flow schedule end
            with (t' = 0.001) has std ≈ 0.001 under CPS, CPWS and Precise; its Gaussian log-prob weighs the update
            by 1/std², so one optimizer step drives its ratio to 0 and its KL to ~10, and it alone decides the
            update (the final tone of the image, e.g. a grey haze on the toy). 0 trains it as the references do
            (FlowCPS's eq. 14 log-prob rescales it by 2·std², i.e. almost ignores it).
        algorithm: ``grpo``, or ``diffusion_nft`` (DiffusionNFT, arXiv 2509.16117; NVlabs/DiffusionNFT): online
            RL on the forward process. Rollouts (``nft_sampler``) keep only their final latents; each is re-noised
            at ⌊N·timestep_fraction⌋ of the schedule's times and the LoRA regresses the reward-weighted implicit
            positive (β·v_θ + (1 − β)·v_old) and negative ((1 + β)·v_old − β·v_θ) policies onto the clean sample,
            weighted by the optimality probability r = clip(A/advantage_clip/2 + 1/2, 0, 1) (adaptive per-sample
            x̂0 weighting as in the reference). The old policy samples the rollouts.
        nft_beta: the guidance strength β of the implicit policies (1.0 in the reference, 0.1 for its OCR task).
        nft_kl_beta: weight of mean((v_θ − v_ref)²) against the model without the LoRA (1e-4 in the reference).
        nft_old_policy: ``ema``: after every iteration old ← d·old + (1 − d)·θ with d = min(nft_decay_rate·k,
            nft_decay_max) after k optimizer steps (the reference's decay type 1: 0.001, 0.5); ``snapshot``: the old
            policy is the LoRA as the last iteration left it (d = 0).
        nft_sampler: how DiffusionNFT samples its rollouts: "" = ``rule`` with ``eta`` and the window (any step
            rule, ``ode`` included), or a solver name (``euler``, ``dpmpp_2m``; inside ComfyUI any stock sampler).
        dense_rewards: DenseGRPO per-step rewards from ODE look-ahead (one extra ODE rollout + reward per step).
    Optimisation
        inner_epochs, gradient_accumulation (an optimizer step every N trained steps, each over the whole batch),
        lr, weight_decay, adam_betas, max_grad_norm.
    Scale (the update is the same whatever these are; only memory and speed change)
        sample_batch_size: samples per rollout forward (``None`` = the rank's whole batch at once). Each micro-batch
            is decoded and scored as soon as it is sampled.
        train_batch_size: samples per training forward/backward (``None`` = ``sample_batch_size``). Equal sizes train
            exactly the rollout's micro-batches; other sizes cost one extra forward per trained step to recompute the
            old log-probs in the training micro-batches, so the first update stays exactly on-policy.
        gradient_checkpointing: recompute each block's activations in backward (exact also for blocks that update
            tensors in place); memory then holds one block's activations instead of the whole model's.
        train_dtype: ``float32``, ``bfloat16`` or ``float16``: autocast for every model forward (rollouts and
            training); LoRA weights, optimizer state, step maths and log-probs stay float32.
        overlap_reward: score micro-batch k in a worker thread while k + 1 samples (rewards marked ``thread_safe``;
            the results are the same as scoring in turn).
    Guards against reward hacking
        ema_decay: an EMA of the LoRA, updated after every iteration (flow_grpo's decay 0.9 with its warm-up
            min(decay, (1 + k) / (10 + k))), saved and previewed instead of the last weights; 0 = off.
        monitor_samples / monitor_every: the held-out drift monitor (training/monitor.py): this many fixed-seed ODE
            samples of the LoRA that would be saved, scored every ``monitor_every`` iterations (and at the last one)
            by the trainer's ``monitor`` and by the reward; 0 = off.
    LoRA
        lora_rank, lora_alpha (scale α / rank; None = :func:`default_lora_alpha`, 2 × rank: the references' convention,
        rank 32 / α 64 on SD3.5 and 64 / 128 on Flux; the trainer node's default 16 is that for its rank 8),
        lora_targets (fnmatch patterns of module paths).
    Run
        iterations, seed, checkpoint_every (iterations; 0 = only at the end).
    """

    prompts: List[str] = field(default_factory=lambda: ["a handwritten 3"])
    prompts_per_iteration: int = 2
    group_size: int = 8
    steps: int = 10
    shift: float = 1.0
    schedule: str = "normal"
    rule: str = "cps"
    eta: Union[float, Sequence[float], None] = None
    sde_window: Optional[Tuple[int, int]] = None
    sliding_window: bool = False
    window_schedule: str = "fixed"
    window_stride: int = 1
    window_shift_every: int = 1
    ode_sampler: str = "euler"
    cfg: float = 3.0
    log_prob_kind: str = "gaussian"
    kl_kind: str = "gaussian"
    beta: float = 0.1
    clip_range: float = 1e-4
    kl_mask_threshold: float = 0.0
    ratio_norm: bool = False
    advantage_std: str = "group"
    advantage_clip: float = 5.0
    advantage_std_ddof: int = 0
    advantage_eps: float = 1e-4
    timestep_selection: str = "first"
    timestep_fraction: float = 0.99
    dense_rewards: bool = False
    algorithm: str = "grpo"
    nft_beta: float = 1.0
    nft_kl_beta: float = 1e-4
    nft_old_policy: str = "ema"
    nft_decay_rate: float = 0.001
    nft_decay_max: float = 0.5
    nft_sampler: str = ""
    min_train_std: float = 0.01
    inner_epochs: int = 1
    gradient_accumulation: int = 1
    lr: float = 3e-4
    weight_decay: float = 1e-4
    adam_betas: Tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    sample_batch_size: Optional[int] = None
    train_batch_size: Optional[int] = None
    gradient_checkpointing: bool = False
    train_dtype: str = "float32"
    overlap_reward: bool = True
    ema_decay: float = 0.9
    monitor_samples: int = 0
    monitor_every: int = 1
    lora_rank: int = 8
    lora_alpha: Optional[float] = None
    lora_targets: Tuple[str, ...] = ("*attn.qkv", "*attn.proj", "*mlp.fc1", "*mlp.fc2")
    iterations: int = 20
    seed: int = 0
    checkpoint_every: int = 0

    def __post_init__(self):
        if self.sliding_window and self.window_schedule == "fixed":
            self.window_schedule = "sliding"
        self.validate()

    def validate(self) -> None:
        def bad(name, value, allowed):
            raise ValueError(f"GRPOConfig.{name} = {value!r}; allowed: {', '.join(map(str, allowed))}")
        if self.rule not in samplers.RULES:
            bad("rule", self.rule, samplers.RULES)
        if self.schedule not in samplers.SCHEDULES:
            bad("schedule", self.schedule, samplers.SCHEDULES)
        if self.log_prob_kind not in samplers.LOG_PROB_KINDS:
            bad("log_prob_kind", self.log_prob_kind, samplers.LOG_PROB_KINDS)
        if self.group_size < 2:
            raise ValueError("GRPOConfig.group_size must be >= 2: advantages compare samples within a group, and a "
                             "group of one has no signal")
        if not self.prompts:
            raise ValueError("GRPOConfig.prompts is empty: give at least one training prompt")
        if self.prompts_per_iteration < 1:
            raise ValueError("GRPOConfig.prompts_per_iteration must be >= 1")
        if self.advantage_std not in ADVANTAGE_STD_MODES:
            bad("advantage_std", self.advantage_std, ADVANTAGE_STD_MODES)
        if self.timestep_selection not in TIMESTEP_SELECTIONS:
            bad("timestep_selection", self.timestep_selection, TIMESTEP_SELECTIONS)
        if self.window_schedule not in WINDOW_SCHEDULES:
            bad("window_schedule", self.window_schedule, WINDOW_SCHEDULES)
        if self.sliding_window and self.window_schedule != "sliding":
            raise ValueError(f"GRPOConfig: sliding_window = True contradicts window_schedule = "
                             f"{self.window_schedule!r}; set only window_schedule")
        self.sliding_window = self.window_schedule == "sliding"
        if not isinstance(self.ode_sampler, str) or not self.ode_sampler:
            raise ValueError(f"GRPOConfig.ode_sampler must be a sampler name (e.g. 'euler', 'dpmpp_2m'), got "
                             f"{self.ode_sampler!r}")
        if self.algorithm not in ALGORITHMS:
            bad("algorithm", self.algorithm, ALGORITHMS)
        if self.nft_old_policy not in NFT_OLD_POLICIES:
            bad("nft_old_policy", self.nft_old_policy, NFT_OLD_POLICIES)
        if not isinstance(self.nft_sampler, str):
            raise ValueError(f"GRPOConfig.nft_sampler must be a sampler name or '' (the rule), got "
                             f"{self.nft_sampler!r}")
        if self.nft_decay_max >= 1:
            raise ValueError(f"GRPOConfig.nft_decay_max must be below 1 (1 would freeze the old policy), got "
                             f"{self.nft_decay_max!r}")
        if self.ratio_norm and self.log_prob_kind != "gaussian":
            raise ValueError("GRPOConfig.ratio_norm (GRPO-Guard) normalises the per-element Gaussian log-ratio: use "
                             "log_prob_kind 'gaussian' with it")
        if self.algorithm == "diffusion_nft" and self.dense_rewards:
            raise ValueError("GRPOConfig: DiffusionNFT keeps no trajectory, so it has no per-step (dense) rewards: "
                             "turn dense_rewards off or use algorithm 'grpo'")
        if self.kl_kind not in KL_KINDS:
            bad("kl_kind", self.kl_kind, KL_KINDS)
        if not 0 < self.timestep_fraction <= 1:
            raise ValueError(f"GRPOConfig.timestep_fraction must be in (0, 1], got {self.timestep_fraction}")
        for name in ("sample_batch_size", "train_batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"GRPOConfig.{name} must be a whole number >= 1 (or None for the whole batch), got "
                                 f"{value!r}")
        if self.advantage_std_ddof not in (0, 1):
            bad("advantage_std_ddof", self.advantage_std_ddof, (0, 1))
        if self.train_dtype not in TRAIN_DTYPES:
            bad("train_dtype", self.train_dtype, TRAIN_DTYPES)
        if not (self.ema_decay == 0 or 0 < self.ema_decay < 1):
            raise ValueError(f"GRPOConfig.ema_decay must be 0 (off) or in (0, 1), got {self.ema_decay!r}")
        for name in ("monitor_samples", "monitor_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "monitor_samples" else 1):
                raise ValueError(f"GRPOConfig.{name} must be a whole number >= "
                                 f"{0 if name == 'monitor_samples' else 1}, got {value!r}")
        if self.inner_epochs < 1 or self.gradient_accumulation < 1 or self.iterations < 0:
            raise ValueError("GRPOConfig.inner_epochs and gradient_accumulation must be >= 1, iterations >= 0")
        self._check_numbers()

    def _check_numbers(self) -> None:
        """No NaN anywhere; each float setting in its range (inf only where it means "no limit")."""
        for item in fields(self):
            value = getattr(self, item.name)
            values = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, float) and math.isnan(v) for v in values):
                raise ValueError(f"GRPOConfig.{item.name} is NaN; set a number (default: {_default(item)!r})")
        for name, low, inclusive, infinite in _FLOAT_RANGES:
            value = getattr(self, name)
            if value is None and name == "lora_alpha":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"GRPOConfig.{name} must be a number, got {value!r}")
            if math.isinf(value) and not (infinite and value > 0):
                raise ValueError(f"GRPOConfig.{name} = {value}: it must be finite")
            if low is not None and (value < low if inclusive else value <= low):
                raise ValueError(f"GRPOConfig.{name} must be {'>=' if inclusive else '>'} {low:g}, got {value!r}"
                                 + _RANGE_HINTS.get(name, ""))
        if len(self.adam_betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"GRPOConfig.adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}")
        for name in ("steps", "lora_rank", "window_stride", "window_shift_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GRPOConfig.{name} must be a whole number >= 1, got {value!r}")
        if isinstance(self.checkpoint_every, bool) or not isinstance(self.checkpoint_every, int) \
                or self.checkpoint_every < 0:
            raise ValueError(f"GRPOConfig.checkpoint_every must be a whole number >= 0 (0 = only at the end), got "
                             f"{self.checkpoint_every!r}")
        try:
            samplers.loop.per_step_eta(self.rule, self.eta, self.steps)  # finite, in the rule's range, one per step
            samplers.loop.check_window(self.sde_window, self.steps)
        except ValueError as e:
            raise ValueError(f"GRPOConfig: {e}") from None

    def to_dict(self) -> dict:
        return asdict(self)


def default_lora_alpha(rank: int) -> float:
    """The LoRA α used when none is set: 2 × rank (LoRA scale 2), as flow_grpo trains (rank 32 / α 64 on SD3.5,
    64 / 128 on Flux). The trainer node, the toy policy, scripts/train.py and scripts/train_comfy.py all use it."""
    return 2.0 * rank


def _default(item):
    return item.default_factory() if item.default is MISSING else item.default
