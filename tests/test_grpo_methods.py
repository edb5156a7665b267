"""MixGRPO windows with other ODE solvers, FlowDPPO's trust region, GRPO-Guard's ratio normalisation and DiffusionNFT
(pure torch; the ComfyUI side is in tests/host/test_methods.py)."""
import math

import pytest
import torch

import samplers
from grpo_fixtures import make_trainer
from samplers.solvers import dpmpp_2m, euler
from training.grpo_config import GRPOConfig
from training.methods.grpo import policy_loss_from_log_ratio
from training.methods.trust_region import guard_log_ratio, transition_kl, trust_region_keep
from training.methods.nft import NFTTrainer, OldPolicy, nft_loss, optimality_probability


# ----- solvers ------------------------------------------------------------------------------------------------------
def gaussian_data_denoiser(scale):
    """The exact x̂0 of data N(0, s²) under x_t = (1 − t)·x0 + t·ε: its probability-flow ODE is x_t = σ_t·z with
    σ_t = √((1 − t)²s² + t²)."""
    def denoise(x, t):
        return (1 - t) * scale ** 2 / ((1 - t) ** 2 * scale ** 2 + t ** 2) * x
    return denoise


def sigma_of(t, scale):
    return math.sqrt((1 - t) ** 2 * scale ** 2 + t ** 2)


@pytest.mark.parametrize("solver, order", [(euler, 1), (dpmpp_2m, 2)])
def test_solvers_converge_at_their_order_to_the_exact_flow(solver, order):
    scale, z = 0.5, torch.ones(1, dtype=torch.float64)
    t0, t1 = 0.9, 0.2
    errors = []
    for n in (16, 32, 64):
        times = torch.linspace(t0, t1, n + 1, dtype=torch.float64).tolist()
        x = solver(gaussian_data_denoiser(scale), z * sigma_of(t0, scale), times)
        errors.append(abs(float(x) - sigma_of(t1, scale)))
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(abs(math.log2(r) - order) < 0.15 for r in ratios), (errors, ratios)


def test_dpmpp_2m_is_euler_on_its_first_step_and_exact_into_zero():
    denoise = gaussian_data_denoiser(0.7)
    x = torch.randn(3, 2)
    assert torch.allclose(dpmpp_2m(denoise, x, [0.8, 0.5]), euler(denoise, x, [0.8, 0.5]), atol=1e-6)
    assert torch.equal(dpmpp_2m(denoise, x, [0.3, 0.0]), denoise(x, 0.3))


def test_an_ode_solver_integrates_the_steps_outside_the_window_and_records_them():
    model = gaussian_data_denoiser(0.6)
    times = samplers.flow_schedule(6, 1.0, "simple")
    x = torch.randn(2, 1, 4, 4)
    noise = samplers.StepNoise([5, 6])
    final, traj = samplers.sample_flow(model, x, times, rule="cps", window=(2, 4), noise=noise, record=True,
                                       ode_solver=dpmpp_2m)
    ts = times.tolist()
    assert traj.stochastic_steps == [2, 3] and traj.rules == ["ode", "ode", "cps", "cps", "ode", "ode"]
    # the solver alone on those steps gives exactly what the rollout recorded (before and after the window)
    assert torch.equal(dpmpp_2m(model, x, ts[0:3]), traj.latents[2])
    assert torch.equal(dpmpp_2m(model, traj.latents[4], ts[4:]), final)
    assert torch.equal(traj.samples[3], traj.latents[4]) and len(traj.latents) == 6
    # and it is not the Euler rule: the same window with the default ODE ends elsewhere
    euler_final = samplers.sample_flow(model, x, times, rule="cps", window=(2, 4), noise=samplers.StepNoise([5, 6]))
    assert (euler_final - final).abs().max() > 1e-3
    # an Euler solver passed in reproduces the built-in ODE rule
    same = samplers.sample_flow(model, x, times, rule="cps", window=(2, 4), noise=samplers.StepNoise([5, 6]),
                                ode_solver=euler)
    assert torch.allclose(same, euler_final, atol=1e-6)


# ----- MixGRPO windows ----------------------------------------------------------------------------------------------
def test_progressive_window_moves_every_shift_interval_and_stops_at_the_last_trainable_position():
    trainer = make_trainer(steps=6, schedule="normal", sde_window=(0, 2), window_schedule="progressive",
                           window_shift_every=2, timestep_fraction=1.0)
    # the normal schedule's step into σ_min (step 4) is below min_train_std and the last one is deterministic, so
    # position (4, 6) has nothing to train
    assert trainer.window_positions == [0, 1, 2, 3]
    assert [trainer.sde_window(k) for k in range(11)] == [
        (0, 2), (0, 2), (1, 3), (1, 3), (2, 4), (2, 4), (3, 5), (3, 5), (3, 5), (3, 5), (3, 5)]


def test_a_window_position_with_nothing_to_train_is_skipped():
    trainer = make_trainer(steps=4, schedule="simple", sde_window=(3, 4), window_schedule="sliding",
                           timestep_fraction=1.0)
    assert trainer.window_positions == [0, 1, 2]  # (3, 4) is the deterministic step into t = 0
    assert [trainer.sde_window(k) for k in range(4)] == [(2, 3), (0, 1), (1, 2), (2, 3)]


def test_random_window_is_seeded_and_trains_only_its_steps():
    trainer = make_trainer(steps=6, sde_window=(1, 3), window_schedule="random", timestep_fraction=1.0,
                           iterations=4)
    windows = [trainer.sde_window(k) for k in range(40)]
    again = make_trainer(steps=6, sde_window=(1, 3), window_schedule="random", timestep_fraction=1.0)
    assert windows == [again.sde_window(k) for k in range(40)]
    assert {w[0] for w in windows} == set(trainer.window_positions)  # every position is drawn
    other = make_trainer(steps=6, sde_window=(1, 3), window_schedule="random", timestep_fraction=1.0, seed=4)
    assert windows != [other.sde_window(k) for k in range(40)]
    for k in range(3):
        metrics = trainer.step()
        first, stop = windows[k]
        assert metrics["sde_window"] == [first, stop]
        assert metrics["trained_steps"] and all(first <= i < stop for i in metrics["trained_steps"])


@pytest.mark.parametrize("schedule", ["sliding", "progressive", "random"])
def test_mixgrpo_flash_is_on_policy_and_its_rollout_is_the_solver_outside_the_window(schedule):
    trainer = make_trainer(steps=6, sde_window=(1, 3), window_schedule=schedule, ode_sampler="dpmpp_2m",
                           timestep_fraction=1.0)
    assert trainer.ode_solver is dpmpp_2m
    rollout = trainer.rollout(1)
    first, stop = trainer.sde_window(1)
    ts = trainer.times.tolist()
    for chunk in rollout.chunks:
        traj = chunk.trajectory
        assert traj.stochastic_steps == list(range(first, stop))
        cond = chunk.cond
        model = (lambda c: lambda x, t: trainer.denoise(x, t, c))(cond)
        assert torch.allclose(dpmpp_2m(model, traj.latents[stop], ts[stop:]), traj.samples[-1], atol=1e-6)
        if first > 0:
            assert torch.allclose(dpmpp_2m(model, traj.latents[0], ts[:first + 1]), traj.latents[first], atol=1e-6)
    metrics = trainer.step()
    assert metrics["first_ratio_min"] == metrics["first_ratio_max"] == 1.0


def test_sliding_window_flag_is_the_sliding_schedule_and_contradictions_are_refused():
    assert GRPOConfig(sde_window=(0, 2), sliding_window=True).window_schedule == "sliding"
    assert GRPOConfig(sde_window=(0, 2), window_schedule="sliding").sliding_window is True
    with pytest.raises(ValueError, match="sliding_window = True contradicts window_schedule = 'random'"):
        GRPOConfig(sde_window=(0, 2), sliding_window=True, window_schedule="random")
    with pytest.raises(ValueError, match="window_schedule = 'spiral'; allowed: fixed, sliding, progressive, random"):
        GRPOConfig(window_schedule="spiral")
    with pytest.raises(ValueError, match="no pure-torch ODE solver 'uni_pc'"):
        make_trainer(ode_sampler="uni_pc")


# ----- trust region and ratio normalisation -------------------------------------------------------------------------
def test_transition_kl_and_the_trust_region_mask_by_hand():
    old = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    new = torch.tensor([[0.1, 0.3], [1.0, 1.0], [0.2, 0.0], [0.2, 0.0]])
    kl = transition_kl(old, new, torch.tensor(0.5))
    # (0.01 + 0.09)/2 / (2·0.25) = 0.1; 0; 0.02 / 2 / 0.5 = 0.04 twice
    assert torch.allclose(kl, torch.tensor([0.1, 0.0, 0.04, 0.04]))
    log_ratio = torch.tensor([0.2, 0.5, -0.1, 0.1])
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0])
    keep = trust_region_keep(kl, log_ratio, advantages, threshold=0.03)
    # 0: outside, r > 1 with A > 0 → dropped; 1: inside → kept; 2: outside, r < 1 with A < 0 → dropped;
    # 3: outside but r > 1 with A < 0 (moving back) → kept
    assert keep.tolist() == [False, True, False, True]


def test_policy_loss_with_mask_and_without_clipping_by_hand():
    log_ratio = torch.log(torch.tensor([1.5, 0.8, 1.1, 1.0]))
    advantages = torch.tensor([2.0, -1.0, 1.0, 3.0])
    keep = torch.tensor([False, True, True, True])
    out = policy_loss_from_log_ratio(log_ratio, advantages, math.inf, keep)
    # terms −A·r: dropped, 0.8, −1.1, −3.0; the mean over all four
    assert torch.isclose(out["loss"], torch.tensor((0.8 - 1.1 - 3.0) / 4))
    assert float(out["masked_fraction"]) == 0.25
    clipped = policy_loss_from_log_ratio(log_ratio, advantages, 0.05)
    # max(−A·r, −A·clip(r)): −2·1.05 → max(−3, −2.1) = −2.1; max(0.8, 0.95) = 0.95; max(−1.1, −1.05) = −1.05; −3
    assert torch.isclose(clipped["loss"], torch.tensor((-2.1 + 0.95 - 1.05 - 3.0) / 4))


def test_guard_log_ratio_by_hand_and_as_the_shifted_scaled_gaussian_log_ratio():
    x = torch.tensor([[1.0, 2.0]])
    old_mean, mean, std = torch.zeros(1, 2), torch.tensor([[0.1, -0.2]]), torch.tensor(0.5)
    # z = (2, 4), Δμ = (0.1, −0.2): mean(0.2, −0.8) = −0.3
    assert torch.isclose(guard_log_ratio(x, mean, old_mean, std), torch.tensor([-0.3]))
    x, old_mean = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4)
    mean = old_mean + 0.05 * torch.randn(5, 1, 4, 4)
    std = torch.tensor(0.3)
    plain = samplers.log_prob(x, mean, std) - samplers.log_prob(x, old_mean, std)
    shift = ((mean - old_mean) ** 2).flatten(1).mean(1) / (2 * std)
    assert torch.allclose(guard_log_ratio(x, mean, old_mean, std), std * plain + shift, atol=1e-6)


def test_trust_region_and_ratio_norm_train_on_policy_then_mask_off_policy_terms():
    trainer = make_trainer(kl_mask_threshold=1e-9, clip_range=math.inf, inner_epochs=3, ratio_norm=True)
    metrics = trainer.step()
    assert metrics["first_ratio_min"] == metrics["first_ratio_max"] == 1.0  # normalised log-ratio 0 on-policy
    assert metrics["masked_fraction"] > 0  # later epochs moved every term past δ = 1e-9 the way A pushes
    loose = make_trainer(kl_mask_threshold=1e3, clip_range=math.inf, inner_epochs=3).step()
    assert loose["masked_fraction"] == 0.0
    with pytest.raises(ValueError, match="ratio_norm \\(GRPO-Guard\\) normalises the per-element Gaussian"):
        GRPOConfig(ratio_norm=True, log_prob_kind="cps_eq14")


# ----- DiffusionNFT ------------------------------------------------------------------------------------------------
def test_optimality_probability_and_old_policy_decay_follow_the_reference():
    assert optimality_probability(torch.tensor([-7.0, -5.0, 0.0, 2.5, 5.0]), 5.0).tolist() == [0.0, 0.0, 0.5,
                                                                                                 0.75, 1.0]
    p = torch.nn.Parameter(torch.zeros(2))
    old = OldPolicy([p], "ema", 0.001, 0.5)
    with torch.no_grad():
        p.fill_(1.0)
    assert old.advance(100) == pytest.approx(0.1)  # d = min(0.001 · 100, 0.5)
    assert torch.allclose(old.shadow[0], torch.full((2,), 0.9))
    assert old.advance(900) == 0.5
    assert torch.allclose(old.shadow[0], torch.full((2,), 0.95))
    snap = OldPolicy([p], "snapshot", 0.001, 0.5)
    with torch.no_grad():
        p.fill_(3.0)
    assert snap.advance(1000) == 0.0 and torch.equal(snap.shadow[0], p.detach())


def test_nft_loss_by_hand_and_its_gradient_pulls_good_samples_in_and_pushes_bad_ones_away():
    x0 = torch.tensor([[1.0, 1.0]])
    theta = torch.tensor([[0.5, 1.5]], requires_grad=True)
    old = torch.tensor([[0.0, 1.0]])
    out = nft_loss(x0, theta, old, torch.tensor([0.75]), beta=0.5)
    # x̂0⁺ = 0.5θ + 0.5old = (0.25, 1.25): mse 0.3125, w⁺ = mean|·| = 0.5 → 0.625
    # x̂0⁻ = 1.5old − 0.5θ = (−0.25, 0.75): mse 0.8125, w⁻ = 0.75 → 1.0833…
    expected = (0.75 * 0.625 + 0.25 * (0.8125 / 0.75)) / 0.5
    assert torch.isclose(out["loss"], torch.tensor([expected]))
    for r, sign in ((1.0, 1.0), (0.0, -1.0)):
        theta = torch.tensor([[0.5, 1.5]], requires_grad=True)
        nft_loss(x0, theta, old, torch.tensor([r]), beta=1.0)["loss"].sum().backward()
        step = -theta.grad  # gradient descent's direction
        towards = ((x0 - theta.detach()) * step).sum()
        assert sign * float(towards) > 0


def test_nft_keeps_only_final_latents_learns_and_resumes_exactly(tmp_path):
    grpo = make_trainer(iterations=2)
    grpo.train()
    trainer = make_trainer(algorithm="diffusion_nft", rule="ode", iterations=2, lr=3e-2)
    assert isinstance(trainer, NFTTrainer)
    rollout = trainer.rollout(0)
    assert all(set(vars(chunk)) == {"rows", "cond", "final", "seeds"} for chunk in rollout.chunks)
    history = trainer.train()
    per_sample = 1 * 4 * 4 * 4  # one float32 latent [1, 4, 4]
    assert history[-1]["rollout_bytes_per_sample"] == per_sample
    assert grpo.history[-1]["rollout_bytes_per_sample"] > 5 * per_sample
    eligible = [t for t in trainer.times.tolist()[:-1] if t >= 0.01]  # not the normal schedule's t = 0.001
    assert len(eligible) == 5 and len(history[0]["trained_times"]) == int(5 * 0.99)
    assert set(history[0]["trained_times"]) <= set(eligible)
    assert history[-1]["nft_old_decay"] == pytest.approx(min(0.001 * 2 * len(history[0]["trained_steps"]), 0.5))
    # resume: two iterations, a checkpoint, one more == three in one go (old policy and EMA included)
    path = str(tmp_path / "nft.safetensors")
    trainer.save_checkpoint(path)
    resumed = make_trainer(algorithm="diffusion_nft", rule="ode", iterations=3, lr=3e-2)
    resumed.load_checkpoint(path)
    resumed.train()
    straight = make_trainer(algorithm="diffusion_nft", rule="ode", iterations=3, lr=3e-2)
    straight.train()
    for a, b in zip(resumed.policy.lora_state_dict().values(), straight.policy.lora_state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(resumed.old.shadow[0], straight.old.shadow[0])


def test_nft_rollouts_come_from_the_old_policy_with_the_chosen_solver():
    trainer = make_trainer(algorithm="diffusion_nft", nft_sampler="dpmpp_2m", iterations=1, lr=3e-2)
    trainer.train()  # θ moved; the old policy is a mix of the base and θ
    seeds = trainer.sample_seeds(1, range(4))
    cond = trainer.policy.encode_prompts(["bright"] * 4)
    final, _ = trainer.sample_chunk(1, slice(0, 4), cond, seeds)
    x = trainer.initial_noise(seeds) * float(trainer.times[0])
    with trainer.old.applied():
        alone = dpmpp_2m(lambda x_t, t: trainer.denoise(x_t, t, cond), x, trainer.times.tolist())
    assert torch.equal(final, alone)
    current = dpmpp_2m(lambda x_t, t: trainer.denoise(x_t, t, cond), x, trainer.times.tolist())
    assert not torch.equal(final, current)


def test_nft_settings_are_checked():
    with pytest.raises(ValueError, match="DiffusionNFT keeps no trajectory"):
        GRPOConfig(algorithm="diffusion_nft", dense_rewards=True)
    with pytest.raises(ValueError, match="algorithm = 'ppo'; allowed: grpo, diffusion_nft"):
        GRPOConfig(algorithm="ppo")
    with pytest.raises(ValueError, match="nft_decay_max must be below 1"):
        GRPOConfig(nft_decay_max=1.0)
    with pytest.raises(ValueError, match="nft_beta must be > 0"):
        GRPOConfig(nft_beta=0.0)
    with pytest.raises(ValueError, match="DiffusionNFT trains no SDE window"):
        make_trainer(algorithm="diffusion_nft", sde_window=(0, 2), window_schedule="sliding")


def test_a_checkpoint_from_before_these_settings_resumes_as_what_it_was(tmp_path):
    from training import checkpoint as checkpoints
    trainer = make_trainer(iterations=1, sde_window=(0, 2), sliding_window=True, timestep_fraction=1.0)
    trainer.train()
    path = str(tmp_path / "old.safetensors")
    trainer.save_checkpoint(path)
    state = checkpoints.read_checkpoint(path)
    new = ("window_schedule", "window_shift_every", "ode_sampler", "kl_mask_threshold", "ratio_norm", "algorithm",
           "nft_beta", "nft_kl_beta", "nft_old_policy", "nft_decay_rate", "nft_decay_max", "nft_sampler")
    for segment in state["segments"]:
        for name in new:
            del segment["settings"][name]
    checkpoints.write_checkpoint(path, state)
    resumed = make_trainer(iterations=2, sde_window=(0, 2), window_schedule="sliding", timestep_fraction=1.0)
    resumed.load_checkpoint(path)  # no SettingsChanged: the missing settings are the old behaviour
    assert resumed.iteration == 1
    changed = make_trainer(iterations=2, sde_window=(0, 2), window_schedule="sliding", timestep_fraction=1.0,
                           kl_mask_threshold=1e-5)
    with pytest.raises(ValueError, match="kl_mask_threshold 0.0 -> 1e-05"):
        changed.load_checkpoint(path)
