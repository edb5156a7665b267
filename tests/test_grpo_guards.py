"""Guards against reward hacking: the EMA of the LoRA (what is saved and previewed) and the held-out drift monitor."""
import math

import pytest
import torch

import samplers
from grpo_fixtures import brightness, make_trainer
from training.ema import LoRAEMA
from training.grpo_config import GRPOConfig
from training.rewards import weight_free_reward
from training.rewards.weight_free import paper_haze


def test_ema_follows_flow_grpos_warm_up_by_hand():
    p = torch.nn.Parameter(torch.tensor([0.0, 10.0]))
    ema = LoRAEMA([p], decay=0.9)
    expected = torch.tensor([0.0, 10.0])
    for k, value in enumerate([1.0, 3.0, -2.0, 5.0]):
        with torch.no_grad():
            p.fill_(value)
        d = min(0.9, (1 + k) / (10 + k))  # 0.1, 2/11, 0.25, 4/13
        expected = d * expected + (1 - d) * value
        ema.update()
        torch.testing.assert_close(ema.shadow[0], expected, rtol=0, atol=1e-6)
    with ema.applied():
        torch.testing.assert_close(p.detach(), expected)
    assert torch.equal(p.detach(), torch.tensor([5.0, 5.0]))  # the trained weights are back exactly
    restored = LoRAEMA([p], decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 4 and torch.equal(restored.shadow[0], ema.shadow[0])
    with pytest.raises(ValueError, match="decay"):
        LoRAEMA([p], decay=1.0)


def test_the_ema_changes_what_is_saved_not_how_the_run_trains():
    with_ema, without = make_trainer(ema_decay=0.9), make_trainer(ema_decay=0.0)
    a, b = with_ema.train(), without.train()
    assert [h["loss"] for h in a] == [h["loss"] for h in b]
    assert all(torch.equal(p, q) for p, q in zip(with_ema.params, without.params))
    live = with_ema.policy.lora_state_dict()
    saved = with_ema.export_lora_state_dict()
    assert saved.keys() == live.keys()
    ups = [k for k in saved if k.endswith("lora_up.weight")]
    assert any(not torch.equal(saved[k], live[k]) for k in ups)
    shadow = {id(p): s for p, s in zip(with_ema.ema.parameters, with_ema.ema.shadow)}
    for name, param in with_ema.policy.lora.named_parameters():  # the saved values are exactly the EMA's
        if "up" in name:
            assert any(torch.equal(shadow[id(param)].reshape(-1), saved[k].reshape(-1)) for k in ups)
    assert all(torch.equal(v, without.export_lora_state_dict()[k]) for k, v in without.policy.lora_state_dict().items())
    assert torch.equal(with_ema.policy.lora_state_dict()[ups[0]], live[ups[0]])  # exporting left the LoRA alone


def test_the_held_out_monitor_scores_fixed_seeds_of_what_would_be_saved():
    seen = []

    def darkness(images, prompts):
        seen.append(images.shape[0])
        return -images.mean(dim=(1, 2, 3))
    trainer = make_trainer(iterations=4, monitor_samples=3, monitor_every=2)
    trainer.monitor_fn = darkness
    history = trainer.train()
    base = trainer.monitor_baseline
    assert [("monitor" in h) for h in history] == [False, True, False, True]  # every 2nd and the last
    assert seen == [3] * 3  # the baseline and two evaluations, 3 samples each
    assert trainer.last_images.shape[0] == 3  # previews = the held-out samples
    # before training the LoRA is zero, so the baseline is the base model's: the same seeds sampled again agree
    frozen = make_trainer(iterations=1, monitor_samples=3, lr=0.0)
    frozen.monitor_fn = darkness
    again = frozen.train()[0]
    assert again["monitor"] == pytest.approx(base["monitor"], abs=1e-6)
    assert again["held_out_reward"] == pytest.approx(base["held_out_reward"], abs=1e-6)
    assert history[-1]["held_out_reward"] != pytest.approx(base["held_out_reward"], abs=1e-6)  # the LoRA trained


def test_monitor_and_ema_survive_a_checkpoint(tmp_path):
    trainer = make_trainer(iterations=2, monitor_samples=2)
    trainer.train(checkpoint_path=str(tmp_path / "checkpoint.safetensors"))
    resumed = make_trainer(iterations=3, monitor_samples=2)
    resumed.load_checkpoint(str(tmp_path / "checkpoint.safetensors"))
    assert resumed.monitor_baseline == trainer.monitor_baseline
    assert resumed.ema.updates == 2 and all(torch.equal(a, b) for a, b in zip(resumed.ema.shadow, trainer.ema.shadow))


def test_paper_haze_reads_the_background_not_the_strokes():
    paper = torch.ones(2, 16, 16, 3)
    paper[:, 2:14, 6:10] = 0.0  # a thick stroke: 48 of 256 pixels
    paper[:, 2:14, 5] = 0.6  # its soft edge
    hazy = paper.clone()
    hazy[1][hazy[1] > 0.9] -= 0.04
    haze = paper_haze(torch.cat([paper[:1], hazy[1:]]))
    assert float(haze[0]) == 0.0 and float(haze[1]) == pytest.approx(0.04, abs=1e-6)
    reward = weight_free_reward("paper_haze")(torch.cat([paper[:1], hazy[1:]]), ["", ""])
    assert float(reward[0]) > float(reward[1])


def test_guard_settings_are_validated():
    for bad in (dict(ema_decay=1.0), dict(ema_decay=-0.1), dict(monitor_samples=-1), dict(monitor_every=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GRPOConfig(**bad)


def test_stroke_width_is_two_area_over_perimeter_and_blind_to_haze_and_upscaling():
    from training.rewards import BoldDigitReward, StrokeWidth
    thin, bold = torch.ones(1, 16, 16, 3), torch.ones(1, 16, 16, 3)
    thin[0, 3:13, 7:9] = 0.0  # a 10 × 2 bar: area 20, perimeter 2·10 + 2·2 = 24
    bold[0, 3:13, 6:10] = 0.0  # 10 × 4: area 40, perimeter 28
    widths = StrokeWidth()(torch.cat([thin, bold]), ["", ""])
    assert widths.tolist() == pytest.approx([2 * 20 / 24, 2 * 40 / 28], rel=1e-6)
    hazy = bold.clone()
    hazy[hazy > 0.9] -= 0.3  # grey paper, still lighter than the ink threshold
    edge = bold.clone()
    edge[0, 3:13, 5] = 0.6  # a soft edge lighter than ink does not widen the stroke
    upscaled = bold.repeat_interleave(8, 1).repeat_interleave(8, 2)  # the toy VAE's 8× nearest decode
    assert StrokeWidth()(torch.cat([hazy, edge]), ["", ""]).tolist() == pytest.approx([2 * 40 / 28] * 2, rel=1e-6)
    assert StrokeWidth()(upscaled, [""]).item() == pytest.approx(2 * 40 / 28, rel=1e-6)
    assert StrokeWidth()(torch.ones(1, 16, 16, 3), [""]).item() == 0.0
    # bold_digit = P(digit) × width, so a blob that is no digit scores near 0 however thick it is
    reward = BoldDigitReward()
    digits = torch.cat([thin, bold])
    result = reward.evaluate(digits, ["a handwritten 1", "a handwritten 1"])
    probability = torch.tensor(result.details["probability"])
    assert torch.allclose(result.rewards, probability * widths, atol=1e-6)
    blob = torch.ones(1, 16, 16, 3)
    blob[0, 3:14, 3:14] = 0.0  # 11 × 11: width 2 · 121 / 44 = 5.5
    blob_result = reward.evaluate(blob, ["a handwritten 1"])
    assert blob_result.details["width"][0] == pytest.approx(5.5) and blob_result.rewards.item() < 0.01


def test_near_deterministic_steps_are_sampled_but_not_trained():
    # ComfyUI's "normal" schedule ends …, 0.334 → 0.001 → 0: under CPS the step into 0.001 has std ≈ 0.001
    normal4 = [1.0, 0.667, 0.334, 0.001, 0.0]
    trainer = make_trainer(steps=4, rule="cps", eta=0.8)
    trainer.times = torch.tensor(normal4)
    assert trainer.trainable_steps([0, 1, 2], None) == [0, 1]
    stds = samplers.loop.step_stds(normal4, rule="cps", eta=0.8)
    assert stds[2] == pytest.approx(0.001 * math.sin(0.4 * math.pi), rel=1e-5) and stds[3] == 0.0
    assert samplers.loop.stochastic_steps(normal4, rule="cps", eta=0.8) == [0, 1, 2]  # sampling keeps its noise
    trainer.config.min_train_std = 0.0  # the references' behaviour: train it
    assert trainer.trainable_steps([0, 1, 2], None) == [0, 1, 2]
    # Flow-SDE's std comes from the current time: it keeps the step into 0.001 (std 0.29) and drops the last one,
    # 0.001 → 0 (std 0.7 · √(0.001 / 0.999) · √0.001 ≈ 0.0007)
    flow = make_trainer(steps=4, rule="flow_sde", eta=0.7)
    flow.times = torch.tensor(normal4)
    assert flow.trainable_steps([0, 1, 2, 3], None) == [0, 1, 2]


def test_training_skips_the_sharp_step_and_stays_on_policy():
    trainer = make_trainer(steps=4, rule="cps", eta=0.8, beta=0.1)
    trainer.times = torch.tensor([1.0, 0.667, 0.334, 0.001, 0.0])
    metrics = trainer.step()
    assert metrics["trained_steps"] == [0, 1]
    assert metrics["first_ratio_min"] == metrics["first_ratio_max"] == 1.0
    # without the guard the step into 0.001 dominates: its ratio collapses after one update and its KL explodes
    sharp = make_trainer(steps=4, rule="cps", eta=0.8, beta=0.1, min_train_std=0.0)
    sharp.times = torch.tensor([1.0, 0.667, 0.334, 0.001, 0.0])
    sharp_metrics = sharp.step()
    assert sharp_metrics["trained_steps"] == [0, 1, 2]
    assert sharp_metrics["kl"] > 100 * max(metrics["kl"], 1e-12)


def test_a_run_with_only_sharp_steps_is_refused_with_advice():
    with pytest.raises(ValueError, match="min_train_std"):
        make_trainer(steps=2, rule="cps", eta=0.8, timestep_fraction=1.0, min_train_std=0.6)
    with pytest.raises(ValueError, match="min_train_std"):
        GRPOConfig(min_train_std=float("nan"))
