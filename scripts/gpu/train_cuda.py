"""A CUDA training workload for the GPU acceptance run (scripts/gpu-acceptance.sh).

Trains a small convolutional classifier on random data on the GPU and prints
one JSON line: the device, the number of GPUs torch sees, and the median
step time after warm-up. Modes (argv[1]):
  train [STEPS]      the training loop (default 60 steps)
  hold MiB SECONDS   allocate MiB of GPU memory and hold it (gpu_memory limit)
  busy SECONDS       keep the GPU busy (gpu_seconds budget)
"""
import json
import statistics
import sys
import time

import torch
import torch.nn as nn


def train(steps):
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(128, 10),
    ).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(256, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (256,), device=dev)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for i in range(steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        if i >= 10:  # warm-up: cuDNN autotuning, allocator growth
            times.append((time.perf_counter() - t0) * 1000)
    print(json.dumps({
        "workload": "torch",
        "device": torch.cuda.get_device_name(0),
        "gpus_seen": torch.cuda.device_count(),
        "step_ms_median": round(statistics.median(times), 3),
        "loss": round(float(loss), 4),
    }), flush=True)


def hold(mib, seconds):
    buf = torch.empty(mib << 20, dtype=torch.uint8, device="cuda")
    buf.fill_(1)
    torch.cuda.synchronize()
    print(json.dumps({"held_mib": mib}), flush=True)
    time.sleep(seconds)


def busy(seconds):
    a = torch.randn(4096, 4096, device="cuda")
    end = time.time() + seconds
    while time.time() < end:
        a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
    print(json.dumps({"busy_s": seconds}), flush=True)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "train"
    if mode == "train":
        train(int(sys.argv[2]) if len(sys.argv) > 2 else 60)
    elif mode == "hold":
        hold(int(sys.argv[2]), float(sys.argv[3]))
    elif mode == "busy":
        busy(float(sys.argv[2]))
    else:
        sys.exit(f"train_cuda.py: unknown mode {mode!r} (train, hold, busy)")
