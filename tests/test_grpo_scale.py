"""Training at scale: micro-batches, gradient checkpointing, mixed precision, overlapped rewards. The update must
not depend on any of them."""
import pytest
import torch

from grpo_fixtures import brightness, make_trainer
from training.grpo_config import GRPOConfig


def float64_trainer(**overrides):
    trainer = make_trainer(**overrides)
    trainer.policy.model.double()
    trainer.policy.lora.double()
    return trainer


def first_update_gradients(trainer):
    """The gradients of the first optimizer step of iteration 0 (the optimizer itself is not stepped)."""
    grads = []

    def record():
        grads.append([p.grad.clone() for p in trainer.params])
        for p in trainer.params:
            p.grad = None
        return 0.0
    trainer._optimizer_step = record
    metrics = trainer.step()
    return grads[0], metrics


@pytest.mark.parametrize("sample_batch_size, train_batch_size, checkpointing", [
    (3, None, False),  # rollout micro-batches, trained as they are
    (3, 2, False),     # other training micro-batches: old log-probs recomputed in them
    (8, 1, True),      # one sample per backward, blocks recomputed in backward
    (2, 5, True),
])
def test_micro_batched_gradient_equals_the_one_batch_gradient(sample_batch_size, train_batch_size, checkpointing):
    settings = dict(rule="cps", beta=0.05, iterations=1, timestep_fraction=0.5, gradient_accumulation=3)
    reference, _ = first_update_gradients(float64_trainer(**settings))
    grads, metrics = first_update_gradients(float64_trainer(
        **settings, sample_batch_size=sample_batch_size, train_batch_size=train_batch_size,
        gradient_checkpointing=checkpointing))
    expected_batches = -(-8 // (train_batch_size or sample_batch_size))
    assert metrics["train_micro_batches"] == expected_batches
    assert metrics["first_ratio_min"] == 1.0 and metrics["first_ratio_max"] == 1.0
    assert any(float(a.abs().max()) > 0 for a in reference)  # (the down matrices' is 0 while up is 0)
    for a, b in zip(reference, grads):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("rule", ["flow_sde", "dance_sde", "cps", "cpws", "precise"])
def test_first_inner_step_is_exactly_on_policy_with_micro_batches_and_checkpointing(rule):
    trainer = make_trainer(rule=rule, beta=0.1, iterations=1, sample_batch_size=3, train_batch_size=2,
                           gradient_checkpointing=True)
    metrics = trainer.step()
    assert metrics["first_ratio_min"] == 1.0 and metrics["first_ratio_max"] == 1.0
    assert metrics["first_kl"] == 0.0 and metrics["kl"] > 0  # the LoRA is zero until the first update


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_forwards_stay_on_policy_and_keep_float32_state(dtype):
    trainer = make_trainer(rule="cps", iterations=2, train_dtype=dtype, sample_batch_size=4)
    metrics = trainer.step()
    assert metrics["first_ratio_min"] == 1.0 and metrics["first_ratio_max"] == 1.0
    trainer.step()
    assert all(p.dtype == torch.float32 for p in trainer.params)
    state = trainer.optimizer.state[trainer.params[0]]
    assert state["exp_avg"].dtype == torch.float32
    rollout = trainer.rollout(5)
    chunk = rollout.chunks[0]
    i = chunk.trajectory.stochastic_steps[0]
    assert chunk.trajectory.means[i].dtype == torch.float32 and chunk.old_log_probs[i].dtype == torch.float32


def test_overlapped_rewards_give_the_same_run_as_serial_ones():
    class ThreadSafeBrightness:
        thread_safe = True
        calls = []

        def __call__(self, images, prompts):
            import threading
            self.calls.append(threading.current_thread().name)
            return brightness(images, prompts)
    reward = ThreadSafeBrightness()
    serial = make_trainer(iterations=2, sample_batch_size=2, overlap_reward=False)
    overlapped = make_trainer(iterations=2, sample_batch_size=2)
    overlapped.reward_fn = reward
    a, b = serial.train(), overlapped.train()
    assert any(name.startswith("flow-cps-reward") for name in reward.calls)
    for key in ("reward_mean", "reward_std", "loss", "ratio_mean"):
        assert [h[key] for h in a] == [h[key] for h in b], key
    for p, q in zip(serial.params, overlapped.params):
        assert torch.equal(p, q)


def test_micro_batches_do_not_change_the_samples():
    one = make_trainer().rollout(0)
    many = make_trainer(sample_batch_size=3).rollout(0)
    assert len(many.chunks) == 3 and [c.rows.stop - c.rows.start for c in many.chunks] == [3, 3, 2]
    torch.testing.assert_close(many.images, one.images, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(many.rewards, one.rewards, rtol=1e-5, atol=1e-6)


def test_scale_settings_are_validated():
    with pytest.raises(ValueError, match="sample_batch_size"):
        GRPOConfig(sample_batch_size=0)
    with pytest.raises(ValueError, match="train_batch_size"):
        GRPOConfig(train_batch_size=2.5)
    with pytest.raises(ValueError, match="train_dtype"):
        GRPOConfig(train_dtype="fp8")
