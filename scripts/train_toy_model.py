"""Train the toy class-conditional flow DiT shipped as training/toy/weights/toy_dit.safetensors.

    python scripts/train_toy_model.py --out out/toy_dit.safetensors      # seed 0, a few minutes on 2 CPU cores
    python scripts/train_toy_model.py --overwrite-shipped                # replace the shipped weights

Rectified flow: x_t = (1 − t)·x0 + t·ε, the network regresses v = ε − x0; t ~ logit-normal(0, 1) (SD3's choice);
10 % label dropout to the null class for classifier-free guidance. Weights are kept as an EMA and saved in float16.
"""
import argparse
import copy
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from training.script_args import HelpFormatter, add_weights_output, number, weights_output, whole_number  # noqa: E402
from training.toy.data import load_digits_16  # noqa: E402
from training.toy.model import (DEFAULT_CONFIG, DEFAULT_WEIGHTS, NULL_CLASS, ToyDiT, one_hot_context,  # noqa: E402
                                save_toy_model)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the data order")
    parser.add_argument("--steps", type=whole_number(1), default=3000, help="optimizer steps")
    parser.add_argument("--batch", type=whole_number(1), default=64, help="images per step")
    parser.add_argument("--lr", type=number(0.0, above=True), default=1e-3, help="peak learning rate (one-cycle)")
    add_weights_output(parser, DEFAULT_WEIGHTS)
    args = parser.parse_args(argv)
    args.out = weights_output(parser, args, DEFAULT_WEIGHTS)
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    generator = torch.Generator().manual_seed(args.seed)
    images, labels = load_digits_16("train")
    model = ToyDiT(**DEFAULT_CONFIG)
    model.initialize_weights(generator)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {len(images)} training digits")
    start = time.time()
    for step in range(args.steps):
        idx = torch.randint(0, len(images), (args.batch,), generator=generator)
        x0 = images[idx]
        y = torch.where(torch.rand(args.batch, generator=generator) < 0.1, NULL_CLASS, labels[idx])
        t = torch.sigmoid(torch.randn(args.batch, generator=generator))
        noise = torch.randn(x0.shape, generator=generator)
        xt = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * noise
        loss = F.mse_loss(model(xt, t * 1000, one_hot_context(y)), noise - x0)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - decay)
        if step % 500 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item():.4f} ({time.time() - start:.0f} s)", flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    save_toy_model(ema, args.out, DEFAULT_CONFIG, {"seed": str(args.seed), "steps": str(args.steps)})
    print(f"trained in {time.time() - start:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
