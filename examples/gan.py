#!/usr/bin/env python3
"""A convolutional GAN (the DCGAN layout) on random images: securetrain's
second benchmark workload.

The generator turns a noise vector into an image through strided transposed
convolutions, each followed by batch normalisation and ReLU; the
discriminator mirrors it with strided convolutions and leaky ReLU. The data
is random noise shaped like a batch of RGB pictures, so nothing is
downloaded. Each iteration is one discriminator update (real and fake
batches) and one generator update. Prints "iters/s" for `make bench`.
"""
import argparse
import os
import time

import torch
from torch import nn


def generator(latent, width, channels, size):
    """latent x 1 x 1 -> channels x size x size; size is a power of two >= 8."""
    ups = size.bit_length() - 3  # 4x4 -> size in doublings
    mult = 2 ** (ups - 1)
    layers = [nn.ConvTranspose2d(latent, width * mult, 4, 1, 0, bias=False),
              nn.BatchNorm2d(width * mult), nn.ReLU(True)]
    for _ in range(ups - 1):
        layers += [nn.ConvTranspose2d(width * mult, width * mult // 2, 4, 2, 1, bias=False),
                   nn.BatchNorm2d(width * mult // 2), nn.ReLU(True)]
        mult //= 2
    layers += [nn.ConvTranspose2d(width * mult, channels, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def discriminator(width, channels, size):
    """channels x size x size -> one logit per image."""
    downs = size.bit_length() - 3  # size -> 4x4 in halvings
    layers = [nn.Conv2d(channels, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
    mult = 1
    for _ in range(downs - 1):
        layers += [nn.Conv2d(width * mult, width * mult * 2, 4, 2, 1, bias=False),
                   nn.BatchNorm2d(width * mult * 2), nn.LeakyReLU(0.2, True)]
        mult *= 2
    layers += [nn.Conv2d(width * mult, 1, 4, 1, 0, bias=False), nn.Flatten()]
    return nn.Sequential(*layers)


def init_weights(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=64, help="image side, a power of two >= 8")
    ap.add_argument("--width", type=int, default=64, help="feature maps of the first/last layer")
    ap.add_argument("--latent", type=int, default=100)
    ap.add_argument("--out", default="outputs")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.size < 8 or args.size & (args.size - 1):
        raise SystemExit("--size must be a power of two >= 8")

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    gen = generator(args.latent, args.width, 3, args.size)
    disc = discriminator(args.width, 3, args.size)
    gen.apply(init_weights)
    disc.apply(init_weights)
    bce = nn.BCEWithLogitsLoss()
    opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    ones = torch.ones(args.batch, 1)
    zeros = torch.zeros(args.batch, 1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"image {args.size}x{args.size}, batch {args.batch}", flush=True)

    start = time.perf_counter()
    for it in range(1, args.iters + 1):
        real = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
        noise = torch.randn(args.batch, args.latent, 1, 1)
        fake = gen(noise)

        opt_d.zero_grad()
        loss_d = bce(disc(real), ones) + bce(disc(fake.detach()), zeros)
        loss_d.backward()
        opt_d.step()

        opt_g.zero_grad()
        loss_g = bce(disc(fake), ones)
        loss_g.backward()
        opt_g.step()
        print(f"iter {it:3d}  loss_d {loss_d.item():.4f}  loss_g {loss_g.item():.4f}", flush=True)
    elapsed = time.perf_counter() - start

    os.makedirs(args.out, exist_ok=True)
    torch.save({"gen": gen.state_dict(), "disc": disc.state_dict()}, os.path.join(args.out, "gan.pt"))
    print(f"setup {start - t0:.2f}s, train {elapsed:.2f}s", flush=True)
    print(f"iters/s {args.iters / elapsed:.3f}", flush=True)


if __name__ == "__main__":
    main()
