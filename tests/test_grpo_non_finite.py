"""Training fails loudly rather than writing NaN over good work: non-finite images, advantages, losses or gradients
stop the run with NonFiniteTraining naming the iteration and the cause, the LoRA is never updated by a non-finite
gradient, the last good checkpoint stays; settings that cannot work (NaN, zero clips, no stochastic step) are
refused before anything runs."""
import math
import typing
from dataclasses import fields

import pytest
import torch

from grpo_fixtures import brightness, make_trainer
from training import checkpoint as ckpt
from training.grpo_config import GRPOConfig
from training.rewards import RewardError
from training.rewards.weight_free import JpegCompressibility
from training.trainer import NonFiniteLoRA, NonFiniteTraining


# ----- configuration ------------------------------------------------------------------------------------------------
def float_fields():
    """Every GRPOConfig field whose type admits a float (scalars, optional floats, float tuples, η)."""
    hints = typing.get_type_hints(GRPOConfig)
    return [f.name for f in fields(GRPOConfig) if "float" in str(hints[f.name]) or hints[f.name] is float]


def test_every_float_setting_rejects_nan():
    names = float_fields()
    assert {"shift", "cfg", "beta", "clip_range", "advantage_clip", "advantage_eps", "timestep_fraction", "lr",
            "weight_decay", "max_grad_norm", "lora_alpha", "eta", "adam_betas"} <= set(names), names
    for name in names:
        value = (0.9, math.nan) if name == "adam_betas" else math.nan
        with pytest.raises(ValueError, match=rf"GRPOConfig\.{name}|{name}.*nan|eta must be finite") as error:
            GRPOConfig(**{name: value})
        assert name.split("_")[0] in str(error.value), (name, str(error.value))


@pytest.mark.parametrize("name, value, needle", [
    ("clip_range", 0.0, r"clip_range must be > 0, got 0.0 \(the PPO ratio clip"),
    ("advantage_clip", 0.0, r"advantage_clip must be > 0.*zero them all"),
    ("max_grad_norm", 0.0, r"max_grad_norm must be > 0.*zero every gradient"),
    ("max_grad_norm", -1.0, r"max_grad_norm must be > 0"),
    ("advantage_eps", 0.0, r"advantage_eps must be > 0"),
    ("shift", 0.0, r"shift must be > 0"),
    ("beta", -0.1, r"beta must be >= 0"),
    ("beta", math.inf, r"beta = inf: it must be finite"),
    ("lr", math.inf, r"lr = inf: it must be finite"),
    ("cfg", -math.inf, r"cfg = -inf: it must be finite"),
    ("weight_decay", math.inf, r"weight_decay = inf"),
    ("lora_alpha", 0.0, r"lora_alpha must be > 0"),
    ("adam_betas", (0.9, 1.0), r"adam_betas must be two numbers in \[0, 1\)"),
    ("eta", [0.5] * 3, r"per-step eta has 3 values but the schedule has 10 steps"),
    ("sde_window", (4, 12), r"SDE window \(4, 12\) must satisfy"),
    ("steps", 0, r"steps must be a whole number >= 1"),
])
def test_settings_that_cannot_work_are_refused(name, value, needle):
    with pytest.raises(ValueError, match=needle):
        GRPOConfig(**{name: value})


def test_infinite_clips_mean_no_clipping_and_train():
    trainer = make_trainer(clip_range=math.inf, advantage_clip=math.inf, max_grad_norm=math.inf, iterations=1)
    metrics = trainer.step()
    assert metrics["clip_fraction"] == 0.0 and math.isfinite(metrics["grad_norm"]) and metrics["grad_norm"] > 0


# ----- no stochastic step -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["cps", "cpws", "precise", "dance_sde"])
def test_one_step_with_a_deterministic_last_step_is_refused_before_the_rollout(rule):
    calls = []

    def reward(images, prompts):
        calls.append(1)
        return brightness(images, prompts)

    with pytest.raises(ValueError, match=rf"nothing to train: the only step ends at t = 0, where '{rule}' is "
                                         r"deterministic.*Use steps >= 2.*'flow_sde'"):
        make_trainer(rule=rule, steps=1, timestep_fraction=1.0)
    trainer = make_trainer(rule=rule, steps=2, timestep_fraction=1.0, iterations=1, schedule="simple")
    trainer.reward_fn = reward
    assert trainer.step()["trained_steps"] == [0] and calls == [1]


def test_flow_sde_trains_its_single_noisy_step_and_other_dead_configurations_are_refused():
    trainer = make_trainer(rule="flow_sde", steps=1, timestep_fraction=1.0, iterations=1)
    assert trainer.step()["trained_steps"] == [0]
    with pytest.raises(ValueError, match=r"timestep_fraction 0.99 of 1 step\(s\) selects no step \(int\(1 × 0.99\) = 0\)"):
        make_trainer(rule="flow_sde", steps=1)
    with pytest.raises(ValueError, match="rule 'ode' never draws noise"):
        make_trainer(rule="ode")
    with pytest.raises(ValueError, match="η is 0 on every step: raise η"):
        make_trainer(rule="cps", eta=0.0)
    with pytest.raises(ValueError, match=r"the SDE window \(5, 6\) holds only the last step, which ends at t = 0"):
        make_trainer(rule="precise", steps=6, sde_window=(5, 6), timestep_fraction=1.0)
    with pytest.raises(ValueError, match=r"only step with η > 0 is the last one"):
        make_trainer(rule="cps", steps=3, eta=[0.0, 0.0, 0.5], timestep_fraction=1.0)
    # a moving window is checked at every position: (2, 4) of 4 steps with fraction 0.5 trains nothing, so the
    # sliding window skips it; with no position left the configuration is refused
    trainer = make_trainer(rule="flow_sde", steps=4, sde_window=(0, 2), sliding_window=True, timestep_fraction=0.5)
    assert trainer.window_positions == [0, 1]
    assert [trainer.sde_window(k) for k in range(3)] == [(0, 2), (1, 3), (0, 2)]
    with pytest.raises(ValueError, match=r"no position of the sliding SDE window of 1 step\(s\) has a step to train"):
        make_trainer(rule="cps", steps=3, eta=[0.0, 0.0, 0.5], sde_window=(0, 1), window_schedule="sliding",
                     timestep_fraction=1.0)


# ----- non-finite values during training ----------------------------------------------------------------------------
def nan_denoise(trainer, *, when, samples=(1, 2)):
    """Make x̂0 NaN for some samples when ``when(t, grad_enabled)`` holds (a model/VAE overflow stand-in)."""
    real = trainer.policy.denoise

    def denoise(x, t, cond, cfg):
        out = real(x, t, cond, cfg)
        if when(t, torch.is_grad_enabled()):
            out = out.clone()
            out[list(samples)] = float("nan")
        return out

    trainer.policy.denoise = denoise


def lora_copy(trainer):
    return [p.detach().clone() for p in trainer.params]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_a_nan_prediction_in_the_rollout_stops_before_the_reward_with_a_jpeg_reward(tmp_path):
    path = tmp_path / ckpt.CHECKPOINT_NAME
    trainer = make_trainer(iterations=4, checkpoint_every=1)
    scored = []
    jpeg = JpegCompressibility()
    trainer.reward_fn = lambda images, prompts: scored.append(len(prompts)) or jpeg(images, prompts)
    trainer.train(iterations=2, checkpoint_path=str(path))
    good, before, moments = path.read_bytes(), lora_copy(trainer), len(scored)
    nan_denoise(trainer, when=lambda t, grad: not grad and 0.4 < t < 0.6)  # one step of the rollout
    with pytest.raises(NonFiniteTraining, match=r"^iteration 2: the rollout decoded non-finite images \(2 of 8\); "
                                                r"check the model/VAE dtype") as error:
        trainer.train(checkpoint_path=str(path))
    assert error.value.iteration == 2 and error.value.cause == "rollout" and isinstance(error.value, FloatingPointError)
    assert len(scored) == moments  # the reward never saw the NaN images
    assert same(before, trainer.params) and trainer.iteration == 2 and len(trainer.history) == 2
    assert path.read_bytes() == good and ckpt.trained_iterations(str(path)) == 2
    assert trainer.save_stopped(str(path)) is None  # nothing was updated: the stopped state is the good one
    assert ckpt.trained_iterations(str(path)) == 2


def test_micro_batched_rollouts_stop_at_the_first_bad_micro_batch_and_say_how_many_were_seen():
    trainer = make_trainer(iterations=1, sample_batch_size=3)
    nan_denoise(trainer, when=lambda t, grad: not grad, samples=(0,))  # the first sample of every micro-batch
    with pytest.raises(NonFiniteTraining, match=r"iteration 0: the rollout decoded non-finite images \(1 of 3\)"):
        trainer.step()


def test_a_decoder_that_hides_nan_latents_is_caught_on_the_latents():
    trainer = make_trainer(iterations=1)
    nan_denoise(trainer, when=lambda t, grad: not grad)
    trainer.policy.decode_fn = lambda latents: torch.nan_to_num(latents, nan=0.5).clamp(0, 1).movedim(1, -1).expand(
        -1, -1, -1, 3)
    with pytest.raises(NonFiniteTraining, match=r"the rollout sampled non-finite latents \(2 of 8\)"):
        trainer.step()


def test_a_nan_loss_never_updates_the_lora_and_never_reaches_a_checkpoint(tmp_path):
    path = tmp_path / ckpt.CHECKPOINT_NAME
    trainer = make_trainer(iterations=4, checkpoint_every=1)
    trainer.train(iterations=1, checkpoint_path=str(path))
    good, before = path.read_bytes(), lora_copy(trainer)
    step_count = int(trainer.optimizer.state[trainer.params[0]]["step"])
    nan_denoise(trainer, when=lambda t, grad: grad)  # only the training forward goes NaN
    with pytest.raises(NonFiniteTraining, match=r"^iteration 1: (non-finite gradients \(norm nan\)|a non-finite loss): "
                                                r"the loss at step 0 was nan .*The LoRA was not updated by them") as error:
        trainer.train(checkpoint_path=str(path))
    assert error.value.cause in ("gradients", "loss") and error.value.iteration == 1
    assert same(before, trainer.params) and all(p.grad is None for p in trainer.params)
    assert int(trainer.optimizer.state[trainer.params[0]]["step"]) == step_count
    assert path.read_bytes() == good


def test_non_finite_gradients_from_a_finite_loss_are_caught_before_the_optimizer_step():
    trainer = make_trainer(iterations=1)
    before = lora_copy(trainer)
    trainer.params[-1].register_hook(lambda grad: grad * float("inf"))
    with pytest.raises(NonFiniteTraining, match=r"iteration 0: non-finite gradients \(norm (inf|nan)\): the loss was "
                                                r"finite"):
        trainer.step()
    assert same(before, trainer.params) and not trainer.optimizer.state


def test_a_failure_after_part_of_an_iterations_updates_is_not_checkpointed(tmp_path):
    path = tmp_path / ckpt.CHECKPOINT_NAME
    trainer = make_trainer(iterations=3, checkpoint_every=1, timestep_fraction=1.0, schedule="simple")
    trainer.train(iterations=1, checkpoint_path=str(path))
    good = path.read_bytes()
    last_trained = trainer.history[-1]["trained_steps"][-1]
    assert trainer.history[-1]["trained_steps"] == [0, 1, 2, 3, 4]  # step 5 ends at t = 0: deterministic
    t_last = float(trainer.times[last_trained])
    nan_denoise(trainer, when=lambda t, grad: grad and t == t_last)  # the iteration's last trained step
    with pytest.raises(NonFiniteTraining, match="iteration 1: (non-finite gradients|a non-finite loss): the loss at "
                                                f"step {last_trained} was nan"):
        trainer.train(checkpoint_path=str(path))
    assert "part of an iteration's updates (iteration 1 stopped after 4 of its updates)" in \
        trainer.save_stopped(str(path))
    with pytest.raises(RuntimeError, match="not checkpointed: the LoRA holds part of an iteration's updates"):
        trainer.save_checkpoint(str(path))
    with pytest.raises(RuntimeError, match="half-done update"):
        trainer.step()
    assert path.read_bytes() == good


def test_non_finite_advantages_stop_the_iteration():
    trainer = make_trainer(iterations=1)
    trainer.advantages = lambda rollout: torch.full((8,), float("nan"))
    with pytest.raises(NonFiniteTraining, match="iteration 0: non-finite advantages") as error:
        trainer.step()
    assert error.value.cause == "advantages" and not trainer.optimizer.state


def test_non_finite_lora_is_a_non_finite_training_error():
    assert issubclass(NonFiniteLoRA, NonFiniteTraining) and NonFiniteLoRA("x", 3).cause == "lora"


def test_a_reward_that_meets_nan_images_names_itself():
    with pytest.raises(RewardError, match=r"reward 'jpeg_compressibility' got non-finite"):
        JpegCompressibility()(torch.full((1, 4, 4, 3), float("nan")), ["x"])


def test_kl_is_not_reported_as_measured_when_beta_is_zero():
    messages = []
    trainer = make_trainer(iterations=1, beta=0.0)
    trainer.log = messages.append
    metrics = trainer.step()
    assert metrics["kl"] is None and metrics["first_kl"] is None
    assert "kl off (β = 0)" in messages[0] and "kl 0" not in messages[0]
    measured = make_trainer(iterations=1, beta=0.1)
    measured.log = messages.append
    metrics = measured.step()
    assert metrics["first_kl"] == 0.0 and metrics["kl"] > 0  # the LoRA starts at zero: KL exactly 0 at first
    assert f"kl {metrics['kl']:.2e}," in messages[1]
