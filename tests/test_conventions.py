"""Pack-wide conventions that need no ComfyUI: readable error type names, seeds up to 2^64 − 1, η ranges per rule."""
import ast
import builtins
from pathlib import Path

import pytest
import torch

import samplers
from grpo_fixtures import make_trainer
from training.lora import LoRANetwork
from training.rewards.base import RewardDependencyMissing, RewardError
from training.rewards.clip_family import RewardModelNotFound

ROOT = Path(__file__).resolve().parent.parent
SEED_MAX = 0xFFFFFFFFFFFFFFFF


def full_type_name(klass):
    """What ComfyUI's execution.py shows as an error's ``exception_type`` (same rule as its full_type_name)."""
    return klass.__qualname__ if klass.__module__ == "builtins" else f"{klass.__module__}.{klass.__qualname__}"


def pack_exception_classes():
    """(file, class node) of every exception class defined in the pack's code (not tests), found from the source:
    a class whose base is a builtin exception or another such class of the pack."""
    classes = {}
    for path in sorted(ROOT.glob("**/*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", "scripts") or rel.parts[0].startswith("."):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = [b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else None
                         for b in node.bases]
                classes[node.name] = (str(rel), node, bases)

    def is_exception(name, seen=()):
        builtin = getattr(builtins, name, None)
        if isinstance(builtin, type) and issubclass(builtin, BaseException):
            return True
        return name in classes and name not in seen and any(
            b is not None and is_exception(b, seen + (name,)) for b in classes[name][2])

    return [(rel, node) for name, (rel, node, _) in classes.items() if is_exception(name)]


def test_every_pack_exception_class_has_a_readable_module():
    found = pack_exception_classes()
    names = {node.name for _, node in found}
    assert {"RewardError", "RewardDependencyMissing", "RewardModelNotFound", "NonFiniteTraining", "SettingsChanged",
            "CheckpointError",
            "DynamicModelNotTrainable", "NotAFlowModelError"} <= names, names
    unreadable = []
    for rel, node in found:
        assigned = [s.value.value for s in node.body if isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant)
                    and any(isinstance(t, ast.Name) and t.id == "__module__" for t in s.targets)]
        if assigned != ["flow_cps"]:
            unreadable.append(f"{rel}: class {node.name}")
    assert not unreadable, "set __module__ = \"flow_cps\" in: " + ", ".join(unreadable)


def test_the_error_type_comfyui_shows_is_short():
    assert full_type_name(RewardError) == "flow_cps.RewardError"
    assert full_type_name(RewardModelNotFound) == "flow_cps.RewardModelNotFound"
    assert full_type_name(RewardDependencyMissing) == "flow_cps.RewardDependencyMissing"
    assert issubclass(RewardModelNotFound, FileNotFoundError)  # still caught as what it is
    with pytest.raises(RewardError):
        raise RewardModelNotFound("x")


def test_seeds_up_to_2_64_minus_1_give_valid_distinct_per_sample_seeds():
    for seed in (0, 2**63 - 1, 2**63, SEED_MAX - 1, SEED_MAX):
        trainer = make_trainer(seed=seed, iterations=1)
        seeds = trainer.sample_seeds(0, range(8)) + trainer.sample_seeds(1, range(8))
        assert all(0 <= s < 2**63 for s in seeds) and len(set(seeds)) == len(seeds)
        noise = trainer.initial_noise(seeds[:2])
        assert noise.shape == (2, 1, 4, 4) and torch.isfinite(noise).all()
    # the top of the range is not folded onto another seed
    assert make_trainer(seed=SEED_MAX).sample_seeds(0, [0]) != make_trainer(seed=SEED_MAX - 1).sample_seeds(0, [0])
    assert make_trainer(seed=SEED_MAX).sample_seeds(0, [0]) != make_trainer(seed=0).sample_seeds(0, [0])


def test_a_run_with_the_largest_seed_trains_and_its_lora_init_is_seeded():
    trainer = make_trainer(seed=SEED_MAX, iterations=1)
    trainer.train()
    assert len(trainer.history) == 1
    torch.manual_seed(SEED_MAX)  # what the host LoRA init does with the node's seed
    a = LoRANetwork(torch.nn.Sequential(torch.nn.Linear(4, 4)), targets=("*",), rank=2, seed=SEED_MAX)
    b = LoRANetwork(torch.nn.Sequential(torch.nn.Linear(4, 4)), targets=("*",), rank=2, seed=SEED_MAX)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_step_noise_takes_the_largest_seed():
    noise = samplers.StepNoise([SEED_MAX, 0])(0, torch.zeros(2, 3))
    assert torch.isfinite(noise).all() and not torch.equal(noise[0], noise[1])


def test_eta_ranges_per_rule_and_the_error_names_the_range():
    assert samplers.ETA_RANGE["cps"] == samplers.ETA_RANGE["cpws"] == (0.0, 1.0)
    assert set(samplers.ETA_RANGE) == set(samplers.STOCHASTIC_RULES)
    for rule, (lo, hi) in samplers.ETA_RANGE.items():
        assert lo <= samplers.DEFAULT_ETA[rule] <= hi
        samplers.check_eta_range(rule, lo)
        samplers.check_eta_range(rule, hi)
        samplers.check_eta_range(rule, [lo, samplers.DEFAULT_ETA[rule], hi])
        with pytest.raises(ValueError, match=rf"outside the range of rule '{rule}': \[{lo:g}, {hi:g}\]"):
            samplers.check_eta_range(rule, hi + 0.01)
        with pytest.raises(ValueError, match=r"schedule value -0.1 is outside"):
            samplers.check_eta_range(rule, [lo, -0.1])
    # a CPS η inside the range is what the step rule itself accepts
    samplers.step("cps", torch.zeros(1, 2), torch.zeros(1, 2), 0.5, 0.25, eta=samplers.ETA_RANGE["cps"][1],
                  noise=torch.zeros(1, 2))
