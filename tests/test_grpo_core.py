"""GRPO core on a tiny random velocity model: LoRA format, loss maths, on-policy ratio, KL, dense rewards,
calibration and bit-exact resume."""
import math

import pytest
import torch

from grpo_fixtures import TinyVelocityModel, encode, make_trainer
from training.grpo_config import GRPOConfig
from training.methods.dense import calibrate_noise, dense_step_rewards
from training.methods.grpo import clipped_policy_loss, group_advantages
from training.lora import LoRANetwork
from training.trainer import GRPOTrainer, reward_curve


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 3.0, 2.0, 2.0, 5.0, 5.0])
    adv = group_advantages(rewards, 2)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 1.0, 0.0, 0.0, 0.0, 0.0]) / (1 + 1e-4) *
                               torch.tensor([1, 1, 0, 0, 0, 0.0]))
    assert not torch.isnan(adv).any()  # identical rewards give 0, not NaN
    glob = group_advantages(rewards, 2, std_mode="global")
    std = rewards.std(unbiased=False)
    torch.testing.assert_close(glob[:2], torch.tensor([-1.0, 1.0]) / (std + 1e-4))
    assert float(group_advantages(torch.tensor([0.0, 100.0]), 2, clip=0.5).abs().max()) == 0.5
    with pytest.raises(ValueError, match="group of one"):
        group_advantages(rewards, 1)
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        group_advantages(rewards, 4)


def test_clipped_loss_by_hand():
    old = torch.zeros(4)
    new = torch.log(torch.tensor([1.5, 0.5, 1.05, 0.95]))
    adv = torch.tensor([1.0, 1.0, -2.0, -2.0])
    out = clipped_policy_loss(new, old, adv, clip_range=0.1)
    # terms: max(-1.5, -1.1) = -1.1; max(-0.5, -0.9) = -0.5; max(2.1, 2.1) = 2.1; max(1.9, 1.9) = 1.9
    assert float(out["loss"]) == pytest.approx((-1.1 - 0.5 + 2.1 + 1.9) / 4)
    assert float(out["clip_fraction"]) == pytest.approx(0.5)
    assert float(out["ratio_max"]) == pytest.approx(1.5)


def test_lora_zero_init_format_and_round_trip():
    model = TinyVelocityModel()
    x, ts, ctx = torch.randn(3, 1, 4, 4), torch.rand(3) * 1000, encode(["bright", "dark", ""])
    base = model(x, ts, ctx)
    lora = LoRANetwork(model, rank=4, alpha=8)
    assert lora.paths == [f"blocks.{b}.{m}" for b in range(2) for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
    assert torch.equal(model(x, ts, ctx), base)  # up = 0: the LoRA starts as the identity
    with torch.no_grad():
        for p in lora.parameters():
            p.add_(0.1 * torch.randn_like(p))
    changed = model(x, ts, ctx)
    assert not torch.allclose(changed, base)
    with lora.disabled():
        assert torch.equal(model(x, ts, ctx), base)
    # the update is (α/r)·up·down on the named layer
    adapter = lora.adapter("blocks.0.attn.qkv")
    h = torch.randn(5, 16)
    layer = model.blocks[0].attn.qkv
    torch.testing.assert_close(layer(h), torch.nn.functional.linear(h, layer.weight + 2.0 * adapter.up @ adapter.down,
                                                                    layer.bias))
    state = lora.comfy_state_dict()
    assert set(state) == {f"diffusion_model.{p}.{k}" for p in lora.paths
                          for k in ("lora_up.weight", "lora_down.weight", "alpha")}
    assert state["diffusion_model.blocks.0.mlp.fc1.lora_down.weight"].shape == (4, 16)
    assert state["diffusion_model.blocks.0.mlp.fc1.lora_up.weight"].shape == (32, 4)
    assert float(state["diffusion_model.blocks.0.mlp.fc1.alpha"]) == 8.0
    other = LoRANetwork(TinyVelocityModel(), rank=4, alpha=8, seed=9)
    other.load_comfy_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(lora.parameters(), other.parameters()))
    with pytest.raises(ValueError, match="the saved LoRA has rank 4 .* but this network has rank 2"):
        LoRANetwork(TinyVelocityModel(), rank=2).load_comfy_state_dict(state)
    with pytest.raises(ValueError, match="missing"):
        LoRANetwork(TinyVelocityModel(), targets=["*attn.qkv"], rank=4, alpha=8).load_comfy_state_dict(
            {k: v for k, v in state.items() if "qkv" not in k})
    with pytest.raises(ValueError, match="no Linear layer matches"):
        LoRANetwork(model, targets=["*nothing*"])


@pytest.mark.parametrize("rule", ["flow_sde", "dance_sde", "cps", "cpws", "precise"])
def test_first_inner_step_is_on_policy_and_kl_starts_at_zero(rule):
    trainer = make_trainer(rule=rule, beta=0.1, iterations=1)
    metrics = trainer.step()
    assert metrics["first_ratio_min"] == 1.0 and metrics["first_ratio_max"] == 1.0
    assert metrics["first_kl"] == 0.0  # the reference is the same model while the LoRA is zero
    assert metrics["trained_steps"]  # something was trained


def test_kl_is_zero_while_the_lora_is_zero():
    trainer = make_trainer(beta=1.0, lr=0.0)
    metrics = trainer.step()
    assert metrics["kl"] == 0.0


def test_clipped_gradient_equals_policy_gradient_on_policy():
    trainer = make_trainer(clip_range=1e-4)
    rollout = trainer.rollout(0)
    adv = trainer.advantages(rollout)
    i = rollout.trajectory.stochastic_steps[0]
    traj = rollout.trajectory
    import samplers

    def log_prob():
        t, tn = float(trainer.times[i]), float(trainer.times[i + 1])
        denoised = trainer.policy.denoise(traj.latents[i], t, rollout.cond, trainer.config.cfg)
        mean, std = samplers.transition_mean(traj.rules[i], traj.latents[i], denoised, t, tn, eta=traj.etas[i])
        return samplers.log_prob(traj.samples[i], mean, std)

    params = trainer.params
    lp = log_prob()
    clipped = clipped_policy_loss(lp, rollout.old_log_probs[i], adv, 1e-4)["loss"]
    g_clipped = torch.autograd.grad(clipped, params)
    plain = -(adv * log_prob()).mean()  # REINFORCE with ratio 1: ∇ exp(lp − old) = ∇ lp
    g_plain = torch.autograd.grad(plain, params)
    for a, b in zip(g_clipped, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    assert any(float(g.abs().max()) > 0 for g in g_plain)


def test_dense_rewards_telescope_and_give_per_step_advantages():
    trainer = make_trainer(dense_rewards=True, rule="flow_sde")
    rollout = trainer.rollout(0)
    r = rollout.step_rewards
    assert r.shape == (8, 7)
    delta = dense_step_rewards(r)
    torch.testing.assert_close(delta.sum(dim=1), r[:, -1] - r[:, 0])
    torch.testing.assert_close(r[:, -1], rollout.rewards)
    adv = trainer.advantages(rollout)
    assert adv.shape == (8, 6)
    torch.testing.assert_close(adv.reshape(2, 4, 6).mean(dim=1), torch.zeros(2, 6), atol=1e-5, rtol=0)
    metrics = trainer.step()
    assert len(metrics["step_advantage_abs_mean"]) == 6
    assert metrics["dense_extra_reward_calls"] == 6
    assert metrics["time_reward"] > 0 and metrics["time_rollout"] > 0 and metrics["time_train"] > 0


def test_calibration_moves_psi_in_the_documented_direction():
    psi = torch.full((3,), 0.5)
    delta = torch.tensor([[1.0, 1.0, 0.0], [-1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
    # step 0: 2 positive, 2 negative → balanced → more noise; step 1: all positive → less; step 2: no signal → more
    torch.testing.assert_close(calibrate_noise(psi, delta), torch.tensor([0.51, 0.49, 0.51]))
    torch.testing.assert_close(calibrate_noise(torch.zeros(3), -torch.ones(4, 3)), torch.zeros(3))


def test_resume_is_bit_exact(tmp_path):
    straight = make_trainer(iterations=4)
    straight.train()
    first = make_trainer(iterations=4)
    first.train(iterations=2, checkpoint_path=str(tmp_path / "ckpt.safetensors"))
    resumed = make_trainer(iterations=4)
    resumed.load_checkpoint(str(tmp_path / "ckpt.safetensors"))
    assert resumed.iteration == 2
    resumed.train()
    keys = ("reward_mean", "loss", "ratio_mean", "grad_norm")
    assert [[h[k] for k in keys] for h in resumed.history] == [[h[k] for k in keys] for h in straight.history]
    for a, b in zip(straight.params, resumed.params):
        assert torch.equal(a, b)
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary file


def test_config_validation_messages():
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match="rule = 'ddim'"):
        GRPOConfig(rule="ddim")
    with pytest.raises(ValueError, match="advantage_std"):
        GRPOConfig(advantage_std="batch")


def test_sliding_window_moves_and_reward_curve_renders():
    trainer = make_trainer(sde_window=(0, 2), sliding_window=True, schedule="simple")
    assert [trainer.sde_window(i) for i in range(6)] == [(0, 2), (1, 3), (2, 4), (3, 5), (4, 6), (0, 2)]
    history = trainer.train(iterations=2)
    assert all(set(h["trained_steps"]) <= set(range(*trainer.sde_window(h["iteration"]))) for h in history)
    image = reward_curve(history)
    assert image.shape[-1] == 3 and math.isfinite(float(image.mean()))


def test_exploration_calibration_returns_a_schedule_the_sampler_accepts():
    from training.methods.dense import calibrate_exploration, eta_to_sigma, sigma_to_eta

    trainer = make_trainer(rule="flow_sde", eta=0.7)
    times = trainer.times
    assert sigma_to_eta("flow_sde", eta_to_sigma("flow_sde", [0.7] * 6, times), times) == pytest.approx([0.7] * 6)
    before = list(trainer.etas)
    schedule = calibrate_exploration(trainer, iterations=3, eps2=0.05)
    assert trainer.etas == before and not trainer.config.dense_rewards  # trainer restored
    assert len(schedule.values) == 6 and schedule.rule == "flow_sde"
    moved = [abs(a - b) for a, b in zip(schedule.values, before)]
    assert all(m > 0 for m in moved)  # every step's noise was adjusted
    trainer.etas = schedule.for_steps(6)
    assert trainer.step()["trained_steps"]
    with pytest.raises(ValueError, match="calibration tunes σ_t"):
        calibrate_exploration(make_trainer(rule="cps"), iterations=1)


def test_trainer_takes_a_host_schedule_and_rejects_a_mismatched_one():
    base = make_trainer(steps=4)
    times = torch.tensor([1.0, 0.7, 0.4, 0.2, 0.0])
    trainer = GRPOTrainer(base.policy, base.reward_fn, base.config, times=times)
    assert torch.equal(trainer.times, times)
    trainer.step()  # the rollout follows the given schedule
    with pytest.raises(ValueError, match="times must be"):
        GRPOTrainer(base.policy, base.reward_fn, base.config, times=torch.linspace(1, 0, 7))


def test_a_policy_noise_scale_reaches_rollout_and_log_probs_and_stays_on_policy():
    trainer = make_trainer(rule="cps", iterations=1)
    trainer.policy.noise_scale = 2.0
    trainer.noise_scale = 2.0
    rollout = trainer.rollout(0)
    i = rollout.trajectory.stochastic_steps[0]
    t = float(trainer.times[0])
    assert float(rollout.trajectory.latents[0].std()) == pytest.approx(2.0 * t, rel=0.15)  # x = t·s·ε
    expected_std = 2.0 * float(trainer.times[i + 1]) * math.sin(math.pi / 2 * trainer.etas[i])
    assert float(rollout.trajectory.stds[i].flatten()[0]) == pytest.approx(expected_std, rel=1e-6)
    metrics = trainer.step()
    assert metrics["first_ratio_min"] == 1.0 and metrics["first_ratio_max"] == 1.0


def test_train_mode_of_the_policy_wraps_every_training_forward_and_backward_only():
    trainer = make_trainer(rule="cps", iterations=1, beta=0.1)
    calls = {"inside": 0, "outside": 0}
    state = {"on": False}
    original = trainer.policy.denoise

    def denoise(*args):
        calls["inside" if state["on"] else "outside"] += 1
        return original(*args)

    class Mode:
        def __enter__(self):
            state["on"] = True

        def __exit__(self, *exc):
            state["on"] = False

    trainer.policy.denoise = denoise
    trainer.policy.train_mode = Mode
    metrics = trainer.step()
    trained = len(metrics["trained_steps"])
    assert calls["inside"] == 2 * trained  # policy and KL reference forward of each trained step
    assert calls["outside"] == trainer.config.steps  # the rollout keeps the host's fast inference kernels


@pytest.mark.parametrize("value", [0.7, 21.3, 300.7])
def test_a_group_of_equal_rewards_gets_exactly_zero_advantage(value):
    rewards = torch.full((24,), value)  # flow_grpo's group size; float32 rewards as the rewards return them
    assert torch.equal(group_advantages(rewards, 8), torch.zeros(24))
    assert torch.equal(group_advantages(rewards, 24, std_mode="global"), torch.zeros(24))


def test_group_std_ddof_matches_dance_grpo_and_precise_by_hand():
    rewards = torch.tensor([1.0, 2.0, 4.0, 7.0])
    mean = 3.5
    population = math.sqrt(((1 - mean) ** 2 + (2 - mean) ** 2 + (4 - mean) ** 2 + (7 - mean) ** 2) / 4)
    sample = math.sqrt(((1 - mean) ** 2 + (2 - mean) ** 2 + (4 - mean) ** 2 + (7 - mean) ** 2) / 3)
    precise = group_advantages(rewards, 4)  # N std + 1e-4
    dance = group_advantages(rewards, 4, ddof=1, eps=1e-8)  # torch .std() + 1e-8
    assert precise[3].item() == pytest.approx((7 - mean) / (population + 1e-4), rel=1e-6)
    assert dance[3].item() == pytest.approx((7 - mean) / (sample + 1e-8), rel=1e-6)
    with pytest.raises(ValueError, match="ddof"):
        group_advantages(rewards, 4, ddof=2)


@pytest.mark.parametrize("rule, expected", [("flow_sde", list(range(9))), ("cps", list(range(9))),
                                            ("cpws", list(range(9))), ("precise", list(range(9)))])
def test_first_fraction_counts_all_steps_as_the_references_do(rule, expected):
    # min_train_std 0: the references also train step 8, into the schedule's σ_min = 0.001 (std ≈ 0.001 under CPS)
    trainer = make_trainer(rule=rule, steps=10, timestep_fraction=0.99, iterations=1, min_train_std=0.0)
    rollout = trainer.rollout(0)
    assert trainer.selected_steps(rollout, 0) == expected  # range(int(10 · 0.99)) = steps 0–8


def test_first_fraction_skips_a_deterministic_step_instead_of_replacing_it():
    trainer = make_trainer(rule="cps", steps=4, timestep_fraction=0.99, sde_window=(1, 4), iterations=1,
                           schedule="simple")  # 1, 0.75, 0.5, 0.25, 0: no step into σ_min
    rollout = trainer.rollout(0)
    assert rollout.stochastic_steps == [1, 2]  # step 3 ends at t = 0: deterministic
    assert trainer.selected_steps(rollout, 0) == [1, 2]  # range(3) ∩ {1, 2}
    with pytest.raises(ValueError, match=r"selects steps 0–0, none of them stochastic \(stochastic: \[2\]\)"):
        make_trainer(rule="cps", steps=4, timestep_fraction=0.25, sde_window=(2, 4), iterations=1,
                     schedule="simple")  # before any rollout
