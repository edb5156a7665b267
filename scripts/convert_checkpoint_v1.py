"""Convert an old flow-cps GRPO checkpoint (v1, ``checkpoint.pt`` written with torch.save) to the current format
(one safetensors file, ``checkpoint.safetensors``), for files you made yourself.

    python scripts/convert_checkpoint_v1.py output/flow_cps_grpo/my_run/checkpoint.pt \\
        output/flow_cps_grpo/my_run/checkpoint.safetensors

The old file is read with ``torch.load(weights_only=True)``, which only rebuilds tensors, dicts, lists, numbers and
strings and refuses anything else (a v1 checkpoint holds nothing else), so nothing in it can run. A file that needs
more is not a v1 checkpoint and is not converted. The trainer and the ComfyUI node never read v1 files.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from training.checkpoint import FORMAT, V1_FORMAT, write_checkpoint  # noqa: E402

KEYS = ("iteration", "history", "config", "lora", "optimizer", "torch_rng")


def read_v1(path: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SystemExit(
            f"{path}: torch.load(weights_only=True) refused it ({type(e).__name__}: {str(e).splitlines()[0]}). "
            "A v1 flow-cps checkpoint holds only tensors and plain values, so this file holds something else and "
            "is not converted (unpickling it could run code).") from None
    if not isinstance(state, dict) or state.get("format") != V1_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise SystemExit(f"{path} is not a v1 flow-cps GRPO checkpoint (format {found!r}, expected {V1_FORMAT!r})")
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise SystemExit(f"{path}: the v1 checkpoint misses {missing}")
    return state


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="the v1 checkpoint (checkpoint.pt)")
    parser.add_argument("new", help="where to write the converted checkpoint (e.g. <run folder>/checkpoint.safetensors)")
    parser.add_argument("--force", action="store_true", help="overwrite NEW if it exists")
    args = parser.parse_args(argv)
    if os.path.abspath(args.old) == os.path.abspath(args.new):
        raise SystemExit("OLD and NEW are the same file")
    if os.path.exists(args.new) and not args.force:
        raise SystemExit(f"{args.new} exists (use --force to overwrite it)")
    state = read_v1(args.old)
    write_checkpoint(args.new, {**{k: state[k] for k in KEYS}, "format": FORMAT})
    print(f"wrote {args.new} ({FORMAT}, {state['iteration']} iterations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
