"""Quality of the shipped toy model: 200 samples (20 per digit), ODE with 20 steps, CFG 3, judged by the classifier.

    python scripts/eval_toy_model.py [--per-digit 20] [--steps 20] [--cfg 3.0]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from training.script_args import HelpFormatter, number, whole_number  # noqa: E402
from training.toy.eval import toy_quality  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--per-digit", type=whole_number(1), default=20, help="samples per digit")
    parser.add_argument("--steps", type=whole_number(1), default=20, help="sampling steps")
    parser.add_argument("--cfg", type=number(), default=3.0, help="classifier-free guidance scale")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    args = parser.parse_args()
    torch.set_num_threads(2)
    result = toy_quality(args.per_digit, args.steps, args.cfg, seed=args.seed)
    print(f"{10 * args.per_digit} samples, ODE {args.steps} steps, CFG {args.cfg}: "
          f"{100 * result['accuracy']:.1f} % recognised as the requested digit")
    print("per digit: " + ", ".join(f"{d}: {100 * a:.0f} %" for d, a in enumerate(result["per_digit"])))


if __name__ == "__main__":
    main()
