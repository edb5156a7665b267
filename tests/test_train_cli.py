"""The command-line scripts check every argument before any work, --help lists choices and defaults, --resume refuses
a checkpoint trained with other settings unless allowed (then metrics.json keeps each segment's settings), a NaN
stops training with the last good checkpoint kept, and re-training scripts never overwrite the shipped weights by
default. scripts/train.py runs in-process on the toy model with tiny settings."""
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from training import checkpoint as ckpt

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--steps", "3", "--group-size", "2", "--prompts", "a handwritten 5", "--checkpoint-every", "1"]


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"flow_cps_cli_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train():
    return load_script("train")


def run(train, out, *extra, iterations=2):
    return train.main(["--out", str(out), "--iterations", str(iterations), *TINY, *extra])


def error_of(capsys, call):
    """The message a script exits with (argparse's usage errors go to stderr, sys.exit(text) carries it)."""
    with pytest.raises(SystemExit) as exited:
        call()
    code, captured = exited.value.code, capsys.readouterr()
    error_of.out = captured.out
    return code, (code if isinstance(code, str) else captured.err)


def test_help_lists_choices_and_defaults(train, capsys):
    code, _ = error_of(capsys, lambda: train.main(["--help"]))
    text = error_of.out
    assert code == 0
    assert "{flow_sde,dance_sde,cps,cpws,precise}" in text and "(default: cps)" in text
    for default in ("(default: 30)", "(default: 4)", "(default: 8)", "(default: 0.001)", "(default: 0.01)",
                    "(default: 5)", "(default: out/grpo)", "cps 0.8", "2 × rank", "{group,global}",
                    "(default: group)"):
        assert default in " ".join(text.split()), default
    for name in ("train_toy_model", "train_digit_classifier"):
        code, _ = error_of(capsys, lambda: load_script(name).main(["--help"]))
        text = " ".join(error_of.out.split())
        assert code == 0 and "--overwrite-shipped" in text and "(default: 64)" in text


@pytest.mark.parametrize("argv, needle", [
    (["--iterations", "0"], "argument --iterations: must be >= 1, got 0"),
    (["--group-size", "1"], "argument --group-size: must be >= 2, got 1"),
    (["--clip-range", "nan"], "argument --clip-range: NaN is not a setting"),
    (["--clip-range", "0"], "argument --clip-range: must be > 0"),
    (["--lr", "-1"], "argument --lr: must be > 0"),
    (["--beta", "inf"], "argument --beta: must be finite"),
    (["--rule", "ddim"], "argument --rule: invalid choice: 'ddim'"),
    (["--rule", "cps", "--eta", "1.5"], "rule 'cps' needs eta in [0, 1]"),
    (["--prompts", "a cat"], "argument --prompts: the toy model needs a prompt naming exactly one digit"),
    (["--prompts", " , "], "argument --prompts: give at least one prompt"),
    (["--allow-changed-settings"], "--allow-changed-settings: only means something with --resume"),
    (["--resume"], "--resume: no checkpoint at"),
])
def test_unusable_arguments_stop_before_anything_is_loaded_or_written(train, tmp_path, capsys, monkeypatch, argv,
                                                                      needle):
    import training.toy.policy
    monkeypatch.setattr(training.toy.policy, "toy_policy", lambda **kw: pytest.fail("the model was loaded"))
    out = tmp_path / "run"
    code, message = error_of(capsys, lambda: train.main(["--out", str(out), *argv]))
    assert code == 2 and needle in message, message
    assert not out.exists()


def test_min_train_std_and_advantage_std_reach_the_config_unchanged(train, tmp_path, capsys):
    from training.grpo_config import GRPOConfig
    args = train.parse_args(["--out", str(tmp_path / "r"), "--min-train-std", "1.2345e-05", "--advantage-std",
                             "global"])
    assert args.config.min_train_std == 1.2345e-05 and args.config.advantage_std == "global"
    defaults = train.parse_args(["--out", str(tmp_path / "r")]).config
    assert (defaults.min_train_std, defaults.advantage_std) == (GRPOConfig.min_train_std, GRPOConfig.advantage_std)
    code, message = error_of(capsys, lambda: train.parse_args(["--advantage-std", "batch"]))
    assert code == 2 and "argument --advantage-std: invalid choice: 'batch'" in message
    code, message = error_of(capsys, lambda: train.parse_args(["--min-train-std", "-0.1"]))
    assert code == 2 and "argument --min-train-std: must be >= 0" in message


def test_out_naming_a_file_is_refused_up_front(train, tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("not a folder")
    code, message = error_of(capsys, lambda: train.main(["--out", str(target)]))
    assert code == 2 and "is a file, not a folder" in message
    code, message = error_of(capsys, lambda: train.main(["--out", str(target / "below")]))
    assert code == 2 and f"{target} is a file, so {target / 'below'} cannot be created" in message
    assert target.read_text() == "not a folder"


def test_one_step_with_a_deterministic_last_step_is_refused_before_training(train, tmp_path, capsys):
    code, message = error_of(capsys, lambda: train.main(["--out", str(tmp_path / "r"), "--steps", "1"]))
    assert "the only step ends at t = 0, where 'cps' is deterministic" in message and "steps >= 2" in message
    assert not (tmp_path / "r").exists()


def test_a_run_records_the_eta_and_alpha_used_and_resume_checks_settings(train, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(train, out, "--beta", "0") == 0
    printed = capsys.readouterr().out
    assert "kl off (β = 0)" in printed and "kl 0.00e+00" not in printed
    metrics = json.loads((out / "metrics.json").read_text())
    # the toy's defaults: the bold-digit task, the paper-haze monitor on 16 held-out samples, before training too
    assert metrics["reward"] == "bold_digit" and metrics["monitor"] == "paper_haze"
    assert metrics["config"]["monitor_samples"] == 16 and -1 <= metrics["monitor_baseline"]["monitor"] <= 0
    assert "held-out before training" in printed
    assert metrics["config"]["eta"] == 0.8 and metrics["config"]["lora_alpha"] == 16.0
    assert [h["kl"] for h in metrics["history"]] == [None, None]
    assert metrics["segments"] == [{"first_iteration": 0, "settings": metrics["segments"][0]["settings"]}]
    assert metrics["segments"][0]["settings"]["eta"] == [0.8, 0.8, 0.8]
    checkpoint = out / ckpt.CHECKPOINT_NAME
    good = checkpoint.read_bytes()

    # a new run into the same folder would overwrite it
    code, message = error_of(capsys, lambda: run(train, out, iterations=3))
    assert code == 2 and "already holds a run" in message and "--resume" in message
    # nothing left to do
    code, message = error_of(capsys, lambda: run(train, out, "--resume", iterations=2))
    assert code == 2 and "already holds 2 iterations" in message and "Raise --iterations above 2" in message
    # other settings: refused, naming every difference and the flag
    code, message = error_of(capsys, lambda: run(train, out, "--resume", "--rule", "flow_sde", "--lora-alpha", "8",
                                                 iterations=3))
    assert "rule 'cps' -> 'flow_sde'" in message and "eta 0.8 on all 3 steps -> 0.7 on all 3 steps" in message
    assert "lora_alpha 16.0 -> 8.0" in message  # α is a run setting too
    assert "--allow-changed-settings" in message
    assert checkpoint.read_bytes() == good
    # the same settings resume fine; the optimizer's may change
    assert run(train, out, "--resume", "--lr", "5e-4", "--beta", "0", iterations=3) == 0
    # allowed: the history keeps each segment's settings
    assert run(train, out, "--resume", "--rule", "flow_sde", "--beta", "0", "--allow-changed-settings",
               iterations=4) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["iteration"] for h in metrics["history"]] == [0, 1, 2, 3]
    segments = metrics["segments"]
    assert [s["first_iteration"] for s in segments] == [0, 3]
    assert [s["settings"]["rule"] for s in segments] == ["cps", "flow_sde"]
    assert [s["settings"]["eta"] for s in segments] == [[0.8] * 3, [0.7] * 3]
    assert metrics["config"]["rule"] == "flow_sde" and ckpt.trained_iterations(str(checkpoint)) == 4
    assert ckpt.read_checkpoint(str(checkpoint))["segments"] == segments


def test_a_nan_in_training_stops_the_cli_and_keeps_the_last_good_checkpoint(train, tmp_path, capsys, monkeypatch):
    import training.toy.policy
    real = training.toy.policy.toy_policy
    calls = []

    def breaking_policy(**kwargs):
        policy = real(**kwargs)
        decode = policy.decode

        def decode_nan_from_the_third_rollout(latents):
            calls.append(1)
            images = decode(latents)
            return images * float("nan") if len(calls) >= 3 else images

        policy.decode = decode_nan_from_the_third_rollout
        return policy

    monkeypatch.setattr(training.toy.policy, "toy_policy", breaking_policy)
    out = tmp_path / "run"
    code, message = error_of(capsys, lambda: run(train, out, "--monitor-samples", "0", iterations=4))
    assert message.startswith("training stopped: iteration 2: the rollout decoded non-finite images (2 of 2)")
    assert ckpt.trained_iterations(str(out / ckpt.CHECKPOINT_NAME)) == 2
    assert torch.isfinite(torch.cat([v.flatten() for v in ckpt.read_checkpoint(
        str(out / ckpt.CHECKPOINT_NAME))["lora"].values()])).all()


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("name, shipped, tiny", [
    ("train_toy_model", "toy_dit.safetensors", ["--steps", "2", "--batch", "4"]),
    ("train_digit_classifier", "digit_classifier.safetensors", ["--epochs", "1", "--batch", "512"]),
])
def test_retraining_scripts_never_overwrite_the_shipped_weights_by_default(tmp_path, capsys, name, shipped, tiny):
    script = load_script(name)
    weights = ROOT / "training" / "toy" / "weights" / shipped
    before = digest(weights)
    code, message = error_of(capsys, lambda: script.main(tiny))
    assert code == 2 and "--overwrite-shipped" in message and "--out" in message
    code, message = error_of(capsys, lambda: script.main(tiny + ["--out", str(weights)]))
    assert code == 2 and "is the weights file the pack ships" in message
    code, message = error_of(capsys, lambda: script.main(tiny + ["--out", str(tmp_path)]))
    assert code == 2 and "is a folder: give a file name" in message
    target = tmp_path / "new" / shipped
    assert script.main(tiny + ["--out", str(target)]) == 0
    assert target.stat().st_size > 1000 and digest(weights) == before
    assert os.path.isfile(weights)
