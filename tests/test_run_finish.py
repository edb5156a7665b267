"""A run's files besides its checkpoint: every JSON is written atomically (training.run_folders.write_json), and a run
killed after its last checkpoint but before its final files is finished by --resume, bit for bit what the run that
was never killed wrote (scripts/train.py here; the node and scripts/train_comfy.py: tests/host/test_finishing_killed_runs.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_train_cli import ROOT, error_of, load_script
from training import checkpoint as ckpt
from training import run_folders

FINAL = ("metrics.json", "reward_curve.png", "lora.safetensors")
SMALL = ["--steps", "3", "--group-size", "2", "--prompts", "a handwritten 5", "--checkpoint-every", "1",
         "--monitor-samples", "2"]


class Unprintable:
    def __str__(self):
        raise RuntimeError("serialising failed half-way")


def test_a_failure_mid_write_leaves_the_old_json_intact(tmp_path):
    path = tmp_path / "metrics.json"
    run_folders.write_json(str(path), {"iterations": 3, "history": [1, 2, 3]})
    old = path.read_bytes()
    # json.dump streams into the temporary file: "iterations" and part of "history" are written when it fails
    with pytest.raises(RuntimeError, match="half-way"):
        run_folders.write_json(str(path), {"iterations": 4, "history": [1, 2, 3, Unprintable()]})
    assert path.read_bytes() == old and json.loads(old) == {"iterations": 3, "history": [1, 2, 3]}
    assert sorted(os.listdir(tmp_path)) == ["metrics.json"]  # its own temporary file is gone
    # values JSON cannot hold are written as text; the temporary file lies in the same folder (os.replace is atomic)
    run_folders.write_json(str(path), {"path": Path("/x"), "iterations": 5})
    assert json.loads(path.read_text()) == {"path": "/x", "iterations": 5}
    assert os.path.dirname(ckpt.temporary_path(str(path))) == str(tmp_path)


def test_a_kill_mid_write_leaves_the_old_json_and_the_next_write_cleans_up(tmp_path):
    """SIGKILL from inside json.dump (a value's str() kills the process after part of the file is written)."""
    path = tmp_path / "run_info.json"
    run_folders.write_json(str(path), {"iterations": 1})
    code = ("import os, signal, sys; from training.run_folders import write_json\n"
            "class Kill:\n"
            "    def __str__(self):\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "write_json(sys.argv[1], {'iterations': 2, 'history': ['x' * 100000, Kill()]})\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr
    assert json.loads(path.read_text()) == {"iterations": 1}
    leftovers = [name for name in os.listdir(tmp_path) if name != "run_info.json"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".run_info.json.tmp-")  # the killed write's file
    run_folders.write_json(str(path), {"iterations": 2})
    assert os.listdir(tmp_path) == ["run_info.json"] and run_folders.recorded_iterations(str(path)) == 2


def test_final_files_record_their_iterations_and_stale_ones_are_found(tmp_path):
    from safetensors.torch import save_file
    run_folders.write_json(str(tmp_path / "metrics.json"), {"history": [{}, {}, {}]})  # no "iterations": the history
    run_folders.write_reward_curve(str(tmp_path / "reward_curve.png"), torch.zeros(1, 4, 4, 3), 3)
    save_file({"a": torch.zeros(1)}, str(tmp_path / "lora.safetensors"), metadata={"iterations": "2"})
    save_file({"a": torch.zeros(1)}, str(tmp_path / "lora_final.safetensors"),
              metadata={run_folders.ITERATIONS_KEY: "3"})
    (tmp_path / "broken.json").write_text("{not json")
    assert [run_folders.recorded_iterations(str(tmp_path / n)) for n in (
        "metrics.json", "reward_curve.png", "lora.safetensors", "lora_final.safetensors", "broken.json",
        "missing.json")] == [3, 3, 2, 3, None, None]
    assert run_folders.stale_final_files(str(tmp_path), ["metrics.json", "reward_curve.png", "lora.safetensors",
                                                         "lora_final.safetensors", "missing.json"], 3) == [
        "lora.safetensors", "missing.json"]


def script(out, iterations, *extra, kill=False):
    """scripts/train.py in its own process; ``kill``: SIGKILLed right after its last checkpoint, before any final
    file (its write_outputs kills the process)."""
    code = ("import importlib.util, os, signal, sys\n"
            "spec = importlib.util.spec_from_file_location('train_script', 'scripts/train.py')\n"
            "train = importlib.util.module_from_spec(spec); spec.loader.exec_module(train)\n"
            + ("train.write_outputs = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n" if kill else "")
            + "sys.exit(train.main(sys.argv[1:]))\n")
    argv = ["--out", str(out), "--iterations", str(iterations), *SMALL, *extra]
    done = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == (-9 if kill else 0), (done.stdout[-2000:], done.stderr[-3000:])
    assert ckpt.trained_iterations(str(out / ckpt.CHECKPOINT_NAME)) == iterations


def same_lora(a, b) -> bool:
    """The same tensors, bit for bit (NaN-free LoRAs: torch.equal), and the same metadata."""
    from safetensors import safe_open
    first, second = load_file(str(a)), load_file(str(b))
    with safe_open(str(a), "pt") as x, safe_open(str(b), "pt") as y:
        metadata = x.metadata() == y.metadata()
    return metadata and first.keys() == second.keys() and all(
        first[k].dtype == second[k].dtype and torch.equal(first[k], second[k]) for k in first)


def untimed(value):
    """``value`` without the timings a run measures ("seconds", "time_*")."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k != "seconds" and not k.startswith("time_")}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


@pytest.fixture(scope="module")
def train():
    return load_script("train")


def main(train, out, iterations, *extra):
    return train.main(["--out", str(out), "--iterations", str(iterations), *SMALL, *extra])


def test_a_run_killed_before_its_final_files_is_finished_by_resume_bit_exactly(train, tmp_path, capsys):
    straight = tmp_path / "straight"
    script(straight, 3)

    # killed after the checkpoint of its last iteration: no final file, and the resume trains nothing
    killed = tmp_path / "killed"
    script(killed, 3, kill=True)
    assert not any((killed / name).exists() for name in FINAL)
    before = (killed / ckpt.CHECKPOINT_NAME).read_bytes()
    assert main(train, killed, 3, "--resume") == 0
    printed = capsys.readouterr().out
    assert "already holds all 3 iterations" in printed and "writing metrics.json, reward_curve.png, " \
                                                         "lora.safetensors" in printed
    assert "iteration 1" not in printed.replace("iterations", "")  # nothing was trained
    # what the run that was never killed wrote: the LoRA bit for bit (and its metadata; safetensors writes the
    # metadata in a per-process hash order, so the files' bytes may differ), the curve byte for byte
    assert same_lora(killed / "lora.safetensors", straight / "lora.safetensors")
    trained = load_file(str(killed / "lora.safetensors"))
    assert any(float(v.abs().max()) > 0 for k, v in trained.items() if "lora_up" in k)  # a LoRA that learnt
    assert (killed / "reward_curve.png").read_bytes() == (straight / "reward_curve.png").read_bytes()
    # its metrics too, but for the timings (each run's own; the finished file holds the killed run's, from its
    # checkpoint)
    metrics = json.loads((killed / "metrics.json").read_text())
    assert untimed(metrics) == untimed(json.loads((straight / "metrics.json").read_text()))
    assert metrics["history"] == ckpt.read_checkpoint(str(killed / ckpt.CHECKPOINT_NAME))["history"]
    assert metrics["iterations"] == 3 and metrics["monitor_baseline"]["monitor"] is not None
    assert (killed / ckpt.CHECKPOINT_NAME).read_bytes() == before
    # finished: another resume has nothing left to do
    code, message = error_of(capsys, lambda: main(train, killed, 3, "--resume"))
    assert code == 2 and "nothing left to do (its final files are all written)" in message

    # a kill between two final files: only the missing one is written, the others stay as they are
    lora_time = (killed / "lora.safetensors").stat().st_mtime_ns
    (killed / "reward_curve.png").unlink()
    assert main(train, killed, 3, "--resume") == 0
    assert "writing reward_curve.png:" in capsys.readouterr().out
    assert (killed / "lora.safetensors").stat().st_mtime_ns == lora_time
    assert (killed / "reward_curve.png").read_bytes() == (straight / "reward_curve.png").read_bytes()


def test_final_files_of_an_earlier_segment_are_rewritten_when_the_last_one_was_killed(train, tmp_path, capsys):
    """2 iterations (final files written), resumed to 3 and killed after its checkpoint: the files showing 2
    iterations are stale, and the finishing resume writes all of them, as a straight 3-iteration run does."""
    straight, out = tmp_path / "straight", tmp_path / "run"
    script(straight, 3)
    script(out, 2)
    old_lora = (out / "lora.safetensors").read_bytes()
    script(out, 3, "--resume", kill=True)
    assert (out / "lora.safetensors").read_bytes() == old_lora  # the kill left the 2-iteration files
    capsys.readouterr()
    # more iterations than asked: refused, as before
    code, message = error_of(capsys, lambda: main(train, out, 2, "--resume"))
    assert code == 2 and "already holds 3 iterations and --iterations is 2" in message
    assert main(train, out, 3, "--resume") == 0
    assert "writing metrics.json, reward_curve.png, lora.safetensors" in capsys.readouterr().out
    assert same_lora(out / "lora.safetensors", straight / "lora.safetensors")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 3 and [h["iteration"] for h in metrics["history"]] == [0, 1, 2]
