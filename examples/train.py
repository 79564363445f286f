#!/usr/bin/env python3
"""A small, real PyTorch training job for securetrain's demo and tests.

Trains a two-layer MLP on a synthetic, learnable classification task (the
label is a fixed linear rule of the input, so the loss really falls), and
writes a checkpoint into ./outputs. Prints one line per epoch and a final
"steps/s" figure that `make bench` reads.
"""
import argparse
import os
import time

import torch
from torch import nn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", default="outputs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    dim, classes = 64, 4
    rule = torch.randn(dim, classes)
    model = nn.Sequential(nn.Linear(dim, 256), nn.ReLU(), nn.Linear(256, classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}", flush=True)
    first = last = None
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        x = torch.randn(args.batch, dim)
        y = (x @ rule).argmax(dim=1)
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if first is None:
            first = loss.item()
        if step % 100 == 0 or step == args.steps:
            last = loss.item()
            print(f"step {step:5d}  loss {last:.4f}", flush=True)
    elapsed = time.perf_counter() - start

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "model.pt")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "steps": args.steps}, path)
    print(f"loss {first:.4f} -> {last:.4f}; checkpoint {path}", flush=True)
    print(f"steps/s {args.steps / elapsed:.1f}", flush=True)
    if not last < first:
        raise SystemExit("training did not reduce the loss")


if __name__ == "__main__":
    main()
