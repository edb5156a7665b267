"""Checkpoints never run code: the safetensors + JSON format, a crafted pickle given to every loader the pack has,
the resume-path rule of the trainer node (runs stay inside output/flow_cps_grpo/), 'latest' skipping failed attempts,
non-finite LoRAs, atomic writes without leftover temporary files, optimizer settings on resume, v1 conversion."""
import importlib.util
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from grpo_fixtures import make_trainer
from training import checkpoint as ckpt
from training import run_folders
from training.trainer import NonFiniteLoRA

ROOT = Path(__file__).resolve().parent.parent


class Payload:
    """Unpickling this creates the marker file: the stand-in for arbitrary code in a crafted checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def craft(path, marker, style="torch"):
    """A malicious file shaped like a v1 checkpoint (torch.save zip) or a plain pickle."""
    state = {"format": ckpt.V1_FORMAT, "iteration": 3, "payload": Payload(marker)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if style == "torch":
        torch.save(state, str(path))
    else:
        with open(path, "wb") as handle:
            pickle.dump(state, handle, protocol=2)
    return path


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"flow_cps_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("style", ["torch", "pickle"])
def test_the_crafted_file_really_runs_code_when_unpickled(tmp_path, style):
    """Guards the test below: the payload works, so its absence there means the loaders did not unpickle."""
    marker = tmp_path / "marker"
    path = craft(tmp_path / "evil.pt", marker, style)
    if style == "torch":
        torch.load(str(path), weights_only=False)
    else:
        with open(path, "rb") as handle:
            pickle.load(handle)
    assert marker.exists()


@pytest.mark.parametrize("style", ["torch", "pickle"])
def test_no_loader_of_the_pack_unpickles_a_crafted_file(tmp_path, style):
    marker = tmp_path / "marker"
    output = tmp_path / "output"
    run = output / "flow_cps_grpo" / "victim"
    inside = craft(run / ckpt.CHECKPOINT_NAME, marker, style)  # an upload renamed to the checkpoint name
    outside = craft(tmp_path / "elsewhere" / "checkpoint.pt", marker, style)
    craft(run / ckpt.V1_CHECKPOINT_NAME, marker, style)

    # the trainer
    trainer = make_trainer()
    for path in (inside, outside, run / ckpt.V1_CHECKPOINT_NAME):
        with pytest.raises(ckpt.CheckpointError, match="convert_checkpoint_v1.py"):
            trainer.load_checkpoint(str(path))
    assert trainer.iteration == 0

    # the node's resume rule (training.run_folders; the node passes ComfyUI's output directory)
    with pytest.raises(ValueError, match="not inside a run folder"):
        run_folders.resolve_resume(str(output), str(outside), "victim")
    with pytest.raises(ckpt.CheckpointError, match="convert_checkpoint_v1.py"):
        run_folders.resolve_resume(str(output), f"flow_cps_grpo/victim/{ckpt.CHECKPOINT_NAME}", "victim")
    with pytest.raises(FileNotFoundError, match="no checkpoint with a trained iteration") as error:
        run_folders.resolve_resume(str(output), "latest", "victim")
    assert "convert_checkpoint_v1.py" in str(error.value)

    # the conversion script
    convert = load_script("convert_checkpoint_v1")
    with pytest.raises(SystemExit, match="is not converted") as error:
        convert.main([str(outside), str(tmp_path / "converted.safetensors")])
    assert "weights_only=True" in str(error.value)
    assert not (tmp_path / "converted.safetensors").exists()

    # the toy model, digit classifier and reward weight readers
    from training.toy.classifier import load_classifier
    from training.rewards.base import RewardError
    from training.rewards.openclip_convert import load_state_dict_file
    from training.toy.model import read_toy_checkpoint
    with pytest.raises(Exception, match="(?i)header|safetensor"):
        read_toy_checkpoint(str(inside))
    with pytest.raises(Exception, match="(?i)header|safetensor"):
        load_classifier(str(inside))
    with pytest.raises(RewardError, match="weights_only=True"):
        load_state_dict_file(outside)
    if importlib.util.find_spec("transformers") is not None:
        from clip_fixtures import make_tiny_clip_dir
        from training.rewards.clip_family.model import _load_clip_model
        folder = tmp_path / "clip"
        make_tiny_clip_dir(folder)
        (folder / "model.safetensors").unlink()
        craft(folder / "pytorch_model.bin", marker, style)
        with pytest.raises(RewardError):
            _load_clip_model("clipscore", folder)

    # the toy CLI's --resume, with the crafted file as its checkpoint and as an old checkpoint.pt
    for out, name in ((tmp_path / "cli_a", ckpt.CHECKPOINT_NAME), (tmp_path / "cli_b", ckpt.V1_CHECKPOINT_NAME)):
        craft(out / name, marker, style)
        result = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--out", str(out), "--resume",
                                 "--iterations", "1"], capture_output=True, text=True, timeout=300)
        assert result.returncode != 0
        assert "convert_checkpoint_v1.py" in result.stderr, result.stderr
    assert not marker.exists()


def test_checkpoint_is_one_safetensors_file_with_json_metadata(tmp_path):
    trainer = make_trainer(iterations=2)
    path = tmp_path / ckpt.CHECKPOINT_NAME
    trainer.train(checkpoint_path=str(path))
    assert os.listdir(tmp_path) == [ckpt.CHECKPOINT_NAME]
    with safe_open(str(path), "pt") as handle:
        metadata, keys = handle.metadata(), set(handle.keys())
        rng = handle.get_tensor("torch_rng")
    assert metadata["format"] == ckpt.FORMAT
    state = json.loads(metadata["flow_cps.state"])
    assert state["iteration"] == 2 and len(state["history"]) == 2 and state["config"]["lr"] == 1e-2
    assert rng.dtype == torch.uint8 and torch.equal(rng, torch.get_rng_state())
    lora = trainer.policy.lora_state_dict()
    assert {f"lora/{k}" for k in lora} <= keys
    assert {"optimizer/state/0/exp_avg", "optimizer/state/0/exp_avg_sq", "optimizer/state/0/step"} <= keys
    back = ckpt.read_checkpoint(str(path))
    saved = trainer.optimizer.state_dict()
    assert back["optimizer"]["param_groups"] == saved["param_groups"]  # betas stay a tuple, params stay ints
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert set(back["optimizer"]["state"]) == set(saved["state"]) == set(range(len(trainer.params)))
    for index, moments in saved["state"].items():
        for name, value in moments.items():
            assert torch.equal(back["optimizer"]["state"][index][name], value)
    assert all(torch.equal(back["lora"][k], v) for k, v in lora.items())
    assert back["history"] == json.loads(json.dumps(trainer.history))
    assert ckpt.trained_iterations(str(path)) == 2


def test_state_encoding_round_trips_awkward_values():
    state = {"a": {1: torch.arange(3), 2: [1.5, float("inf"), None, True]}, "t": (1, "x"), "s": "__tensor__",
             "odd": {"__tensor__": "not a tensor"}}
    text, tensors = ckpt.encode_state(state)
    back = ckpt.decode_state(text, tensors)
    assert torch.equal(back["a"][1], torch.arange(3)) and back["a"][2] == [1.5, math.inf, None, True]
    assert back["t"] == (1, "x") and back["s"] == "__tensor__" and back["odd"] == {"__tensor__": "not a tensor"}
    with pytest.raises(TypeError, match="cannot store Payload"):
        ckpt.encode_state({"x": Payload("m")})


def test_no_checkpoint_without_a_trained_iteration_and_latest_skips_failed_attempts(tmp_path):
    output = tmp_path / "output"
    runs = output / "flow_cps_grpo"
    good = make_trainer(iterations=3)
    good.train(checkpoint_path=str(runs / "r" / ckpt.CHECKPOINT_NAME))
    # a later attempt that failed before its first iteration writes nothing
    failed = make_trainer(iterations=3)
    (runs / "r_2").mkdir()
    assert failed.save_stopped(str(runs / "r_2" / ckpt.CHECKPOINT_NAME)) == "no iteration was trained"
    with pytest.raises(ValueError, match="nothing to checkpoint"):
        failed.save_checkpoint(str(runs / "r_2" / ckpt.CHECKPOINT_NAME))
    assert os.listdir(runs / "r_2") == []
    # an empty checkpoint (as older versions wrote for such attempts), newer than the good one, is skipped too
    state = {**failed.state_dict(), "iteration": 0, "history": []}
    ckpt.write_checkpoint(str(runs / "r_3" / ckpt.CHECKPOINT_NAME), state)
    craft(runs / "r_4" / ckpt.CHECKPOINT_NAME, tmp_path / "marker")  # and a foreign file
    os.utime(runs / "r" / ckpt.CHECKPOINT_NAME, (1, 1))
    latest = run_folders.resolve_resume(str(output), "latest", "r")
    assert latest == os.path.realpath(runs / "r" / ckpt.CHECKPOINT_NAME)
    resumed = make_trainer(iterations=3)
    resumed.load_checkpoint(latest)
    assert resumed.iteration == 3
    with pytest.raises(ckpt.CheckpointError, match="no trained iteration"):
        run_folders.resolve_resume(str(output), f"flow_cps_grpo/r_3/{ckpt.CHECKPOINT_NAME}", "r")
    # a stopped run with trained iterations is saved
    stopped = make_trainer(iterations=3)
    stopped.train(iterations=1)
    assert stopped.save_stopped(str(runs / "r_5" / ckpt.CHECKPOINT_NAME)) is None
    assert ckpt.trained_iterations(str(runs / "r_5" / ckpt.CHECKPOINT_NAME)) == 1
    assert run_folders.resolve_resume(str(output), "latest", "r") == os.path.realpath(runs / "r_5" /
                                                                                      ckpt.CHECKPOINT_NAME)
    assert not (tmp_path / "marker").exists()


def test_a_non_finite_lora_is_never_checkpointed(tmp_path):
    path = tmp_path / ckpt.CHECKPOINT_NAME
    trainer = make_trainer(iterations=4, checkpoint_every=1)
    trainer.train(iterations=2, checkpoint_path=str(path))
    good = path.read_bytes()
    real_step = trainer.step

    def step_that_breaks_the_lora():
        metrics = real_step()
        with torch.no_grad():
            trainer.params[0].view(-1)[0] = float("nan")
        return metrics

    trainer.step = step_that_breaks_the_lora
    with pytest.raises(NonFiniteLoRA, match="iteration 2 left a non-finite LoRA") as error:
        trainer.train(checkpoint_path=str(path))
    assert error.value.iteration == 2
    assert path.read_bytes() == good and ckpt.trained_iterations(str(path)) == 2
    assert "non-finite" in trainer.save_stopped(str(path))
    with pytest.raises(NonFiniteLoRA):
        trainer.save_checkpoint(str(path))
    assert path.read_bytes() == good and os.listdir(tmp_path) == [ckpt.CHECKPOINT_NAME]


def test_atomic_write_cleans_stale_temporaries_and_its_own_on_error(tmp_path):
    path = tmp_path / ckpt.CHECKPOINT_NAME
    stale = [tmp_path / f".{ckpt.CHECKPOINT_NAME}.tmp-{pid}" for pid in (1, 999999, os.getpid())]
    for f in stale:
        f.write_bytes(b"half a checkpoint from a killed save")
    other = tmp_path / ".lora_final.safetensors.tmp-7"
    other.write_bytes(b"not ours")
    trainer = make_trainer(iterations=1)
    trainer.train(checkpoint_path=str(path))
    assert sorted(os.listdir(tmp_path)) == sorted([ckpt.CHECKPOINT_NAME, other.name])
    before = path.read_bytes()

    def fails_midway(temporary):
        with open(temporary, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ckpt.atomic_write(str(path), fails_midway)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == sorted([ckpt.CHECKPOINT_NAME, other.name])


def test_resume_paths_stay_inside_the_runs_folder(tmp_path):
    output = tmp_path / "output"
    runs = output / "flow_cps_grpo"
    trainer = make_trainer(iterations=1)
    trainer.train(checkpoint_path=str(runs / "mine" / ckpt.CHECKPOINT_NAME))
    elsewhere = tmp_path / "elsewhere"
    make_trainer(iterations=1).train(checkpoint_path=str(elsewhere / ckpt.CHECKPOINT_NAME))
    make_trainer(iterations=1).train(checkpoint_path=str(output / "loose" / ckpt.CHECKPOINT_NAME))
    make_trainer(iterations=1).train(checkpoint_path=str(runs / ckpt.CHECKPOINT_NAME))
    (runs / "linked").symlink_to(elsewhere, target_is_directory=True)
    (runs / "mine" / "link.safetensors").symlink_to(elsewhere / ckpt.CHECKPOINT_NAME)

    expected = os.path.realpath(runs / "mine" / ckpt.CHECKPOINT_NAME)
    for text in (f"flow_cps_grpo/mine/{ckpt.CHECKPOINT_NAME}", "flow_cps_grpo/mine", str(runs / "mine"),
                 f"  flow_cps_grpo/other/../mine/{ckpt.CHECKPOINT_NAME} "):
        assert run_folders.resolve_resume(str(output), text, "mine") == expected
    for text in (str(elsewhere / ckpt.CHECKPOINT_NAME), f"../elsewhere/{ckpt.CHECKPOINT_NAME}",
                 f"flow_cps_grpo/../../elsewhere/{ckpt.CHECKPOINT_NAME}", f"loose/{ckpt.CHECKPOINT_NAME}",
                 f"flow_cps_grpo/{ckpt.CHECKPOINT_NAME}", f"flow_cps_grpo/linked/{ckpt.CHECKPOINT_NAME}",
                 "flow_cps_grpo/linked", "flow_cps_grpo/mine/link.safetensors", "/etc/passwd", ".."):
        with pytest.raises(ValueError, match=r"not inside a run folder of .*flow_cps_grpo.*copy a checkpoint"):
            run_folders.resolve_resume(str(output), text, "mine")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        run_folders.resolve_resume(str(output), "flow_cps_grpo/nothing_here", "mine")
    assert run_folders.resolve_resume(str(output), "", "mine") is None
    # 'latest' ignores a symlinked family member that points outside
    (runs / "mine_2").symlink_to(elsewhere, target_is_directory=True)
    os.utime(elsewhere / ckpt.CHECKPOINT_NAME)
    assert run_folders.resolve_resume(str(output), "latest", "mine") == expected
    # whatever the run name, a new run's folder and a resumed run's folder are run folders under flow_cps_grpo/
    for name in ("mine", "..", ".", "../../escape", "/abs/path", "a/../../b", "", "  "):
        folder = run_folders.new_run_folder(str(output), name)
        assert run_folders.is_run_folder(folder, str(output)), (name, folder)
        assert os.path.dirname(os.path.realpath(folder)) == os.path.realpath(runs)
    assert run_folders.is_run_folder(os.path.dirname(expected), str(output))


def test_settings_set_now_win_over_the_checkpoint_and_moments_come_from_it(tmp_path):
    path = tmp_path / ckpt.CHECKPOINT_NAME
    first = make_trainer(iterations=2, lr=1e-2, weight_decay=1e-4)
    first.train(checkpoint_path=str(path))
    messages = []

    def resumed(**settings):
        trainer = make_trainer(iterations=2, **settings)
        trainer.log = messages.append
        trainer.load_checkpoint(str(path))
        return trainer

    slow = resumed(lr=1e-3, weight_decay=1e-4, adam_betas=(0.8, 0.99))
    group = slow.optimizer.param_groups[0]
    assert group["lr"] == 1e-3 and group["betas"] == (0.8, 0.99) and group["weight_decay"] == 1e-4
    assert any("lr 0.01 -> 0.001" in m for m in messages), messages
    for p_first, p_slow in zip(first.params, slow.params):
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(slow.optimizer.state[p_slow][name], first.optimizer.state[p_first][name])
    # the next optimizer step really uses the new lr: AdamW's update (decay + Adam direction) is linear in lr
    fast = resumed(lr=1e-2, weight_decay=1e-4, adam_betas=(0.8, 0.99))
    deltas = []
    for trainer in (slow, fast):
        before = [p.detach().clone() for p in trainer.params]
        for p in trainer.params:
            p.grad = torch.ones_like(p) * 0.01
        trainer.optimizer.step()
        deltas.append(torch.cat([(p.detach() - b).flatten() for p, b in zip(trainer.params, before)]))
    assert float(deltas[1].abs().max()) > 0
    torch.testing.assert_close(deltas[0], deltas[1] / 10, rtol=1e-4, atol=1e-9)


def test_v1_checkpoints_convert_with_weights_only_and_resume_bit_exactly(tmp_path):
    straight = make_trainer(iterations=4)
    straight.train()
    first = make_trainer(iterations=4)
    first.train(iterations=2)
    old = tmp_path / "run" / ckpt.V1_CHECKPOINT_NAME
    old.parent.mkdir()
    torch.save({**first.state_dict(), "format": ckpt.V1_FORMAT}, str(old))  # exactly what v1 wrote
    new = tmp_path / "run" / ckpt.CHECKPOINT_NAME
    convert = load_script("convert_checkpoint_v1")
    assert convert.main([str(old), str(new)]) == 0
    with pytest.raises(SystemExit, match="exists"):
        convert.main([str(old), str(new)])
    resumed = make_trainer(iterations=4)
    resumed.load_checkpoint(str(new))
    resumed.train()
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    assert all(torch.equal(a, b) for a, b in zip(straight.params, resumed.params))
    # a file that is not a v1 checkpoint is refused
    torch.save({"format": "something else"}, str(tmp_path / "other.pt"))
    with pytest.raises(SystemExit, match="not a v1 flow-cps GRPO checkpoint"):
        convert.main([str(tmp_path / "other.pt"), str(tmp_path / "x.safetensors")])


def test_the_converter_never_unpickles_a_crafted_file(tmp_path):
    marker = tmp_path / "marker"
    evil = craft(tmp_path / "mine.pt", marker)
    convert = load_script("convert_checkpoint_v1")
    with pytest.raises(SystemExit, match="is not converted"):
        convert.main([str(evil), str(tmp_path / "out.safetensors")])
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()



def test_resume_refuses_other_run_settings_and_reads_checkpoints_written_before_segments(tmp_path):
    from training.trainer import SettingsChanged
    path = tmp_path / ckpt.CHECKPOINT_NAME
    first = make_trainer(iterations=2)  # eta unset: the rule's default 0.8; alpha set by the LoRA (8)
    first.train()
    old = {k: v for k, v in first.state_dict().items() if k != "segments"}  # as written before segments existed
    old["config"] = {**old["config"], "lora_alpha": None}
    ckpt.write_checkpoint(str(path), old)
    same = make_trainer(iterations=3, eta=0.8, lora_alpha=8.0, lr=5e-3)  # the values actually used; lr may change
    same.load_checkpoint(str(path))
    assert same.segments == first.segments and same.iteration == 2
    other = make_trainer(iterations=3, rule="flow_sde", steps=5)
    before = [p.detach().clone() for p in other.params]
    with pytest.raises(SettingsChanged, match=r"\(2 iterations\) was trained with other settings: steps 6 -> 5; "
                                              r"rule 'cps' -> 'flow_sde'; eta 0.8 on all 6 steps -> 0.7 on all 5"):
        other.load_checkpoint(str(path))
    assert other.iteration == 0 and all(torch.equal(a, b) for a, b in zip(before, other.params))
    other.load_checkpoint(str(path), allow_changed_settings=True)
    other.train()
    assert [s["first_iteration"] for s in other.segments] == [0, 2]
    assert [(s["settings"]["rule"], s["settings"]["steps"]) for s in other.segments] == [("cps", 6), ("flow_sde", 5)]
    assert [h["iteration"] for h in other.history] == [0, 1, 2]


def test_atomic_write_fsyncs_the_file_before_the_rename_and_then_the_folder(tmp_path, monkeypatch):
    events, real_fsync, real_replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", str(b))) or real_replace(a, b))
    target = tmp_path / "file.bin"
    ckpt.atomic_write(str(target), lambda temporary: Path(temporary).write_bytes(b"payload"))
    assert target.read_bytes() == b"payload" and os.listdir(tmp_path) == ["file.bin"]
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    assert ".file.bin.tmp-" in events[0][1] and events[2][1] == os.path.realpath(tmp_path)
