"""The training methods beside plain GRPO, one module each: the GRPO objective itself (grpo.py), MixGRPO's SDE windows
(mixgrpo.py), the FlowDPPO / GRPO-Guard trust regions (trust_region.py), DenseGRPO's per-step rewards and
exploration calibration (dense.py) and DiffusionNFT (nft.py). GRPOTrainer (training/trainer.py) uses the first four;
DiffusionNFT is a trainer of its own, which ``make_trainer`` picks from ``config.algorithm``."""
from __future__ import annotations


def make_trainer(policy, reward_fn, config, **kwargs):
    """The trainer for ``config.algorithm``: GRPOTrainer or DiffusionNFT's NFTTrainer (same arguments)."""
    from ..trainer import GRPOTrainer  # here, not at the top: the trainer itself imports methods' modules
    from .nft import NFTTrainer
    cls = NFTTrainer if config.algorithm == "diffusion_nft" else GRPOTrainer
    return cls(policy, reward_fn, config, **kwargs)


__all__ = ["make_trainer"]
