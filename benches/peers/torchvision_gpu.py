#!/usr/bin/env python3
"""torchvision GPU transforms peer for metaug's fused CUDA kernel.

Same shape of work as `benches/gpu.rs`: 256 uint8 sources 3x224x224 already on
the device -> 256x3x224x224 float32, with per-sample random parameters drawn
like metaug's `default` policy (crop p .8 area .35-1 aspect 3/4-4/3, rotate
p .5 +-15 deg, flip p .5, noise p .3 sigma U(0, .05)), then ImageNet Normalize.

Two peers, both timed with CUDA events (median of --repeat batches after
--warmup, rotating among 3 input sets so L2 does not serve the sources):

  torchvision_per_sample: torchvision.transforms.v2 on each sample of the
      batch (v2 transforms draw ONE parameter set per call, so per-sample
      randomness means one call per sample; that is how torchvision is used
      for per-sample GPU augmentation);
  pytorch_batched_grid: the best plain-PyTorch batched version, one
      affine_grid + grid_sample (bilinear, zeros, align_corners=False: the
      same semantics as metaug) for the whole batch with per-sample matrices,
      flip folded into the matrix, then noise and normalise as batched ops.

With --metaug-ms (the fused kernel's median from `bench-gpu`, line
"fused kernel: X ms"), prints the ratios. Prints a table, then one JSON line.
"""

import argparse
import json
import math
import statistics

import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def per_sample_transform(size):
    bil = v2.InterpolationMode.BILINEAR
    return v2.Compose([
        v2.RandomChoice(
            [v2.RandomResizedCrop(size, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3), interpolation=bil, antialias=False),
             v2.Resize((size, size), interpolation=bil, antialias=False)],
            p=[0.8, 0.2],
        ),
        v2.RandomApply([v2.RandomRotation(15, interpolation=bil)], p=0.5),
        v2.RandomHorizontalFlip(0.5),
        v2.ToDtype(torch.float32, scale=True),
    ])


def noise_and_normalize(x, gen_sigma):
    # x float [.., 3, H, W] on the device; sigma per sample (0 where not applied)
    x = x + gen_sigma.view(-1, 1, 1, 1) * torch.randn_like(x)
    return TF.normalize(x, MEAN, STD)


def draw_sigmas(b, device):
    apply = torch.rand(b, device=device) < 0.3
    return torch.where(apply, torch.rand(b, device=device) * 0.05, torch.zeros(b, device=device))


def run_per_sample(src, transform, out):
    b = src.shape[0]
    sig = draw_sigmas(b, src.device)
    for i in range(b):
        y = transform(src[i])
        out[i] = noise_and_normalize(y.unsqueeze(0), sig[i:i + 1])[0]
    return out


def batched_thetas(b, device):
    """Per-sample inverse affine maps (normalised coordinates), default-policy-like."""
    crop = torch.rand(b, device=device) < 0.8
    area = torch.where(crop, 0.35 + 0.65 * torch.rand(b, device=device), torch.ones(b, device=device))
    log_r = math.log(3 / 4) + torch.rand(b, device=device) * math.log(16 / 9)
    aspect = torch.where(crop, torch.exp(log_r), torch.ones(b, device=device))
    cw = torch.sqrt(area * aspect).clamp(max=1.0)
    ch = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - cw) * (2 * torch.rand(b, device=device) - 1)
    cy = (1 - ch) * (2 * torch.rand(b, device=device) - 1)
    rot = torch.rand(b, device=device) < 0.5
    ang = torch.where(rot, math.radians(15) * (2 * torch.rand(b, device=device) - 1), torch.zeros(b, device=device))
    flip = torch.where(torch.rand(b, device=device) < 0.5, -1.0, 1.0)
    c, s = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([
        torch.stack([c * cw * flip, -s * ch, cx], dim=1),
        torch.stack([s * cw * flip, c * ch, cy], dim=1),
    ], dim=1)
    return theta


def run_batched(src, out):
    b, _, h, w = src.shape
    theta = batched_thetas(b, src.device)
    grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
    x = src.float().div_(255.0)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out.copy_(noise_and_normalize(y, draw_sigmas(b, src.device)))
    return out


def time_ms(fn, sets, warmup, repeat):
    for k in range(warmup):
        fn(sets[k % len(sets)])
    torch.cuda.synchronize()
    times = []
    for k in range(repeat):
        a = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        a.record()
        fn(sets[k % len(sets)])
        e.record()
        e.synchronize()
        times.append(a.elapsed_time(e))
    return statistics.median(times), times


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--metaug-ms", type=float, default=None,
                   help="metaug fused kernel median ms per batch (from bench-gpu)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("torchvision_gpu: skipped: no CUDA device")
        return
    dev = torch.device("cuda")
    torch.manual_seed(0)
    b, s = args.batch, args.size
    sets = [torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8, device=dev) for _ in range(3)]
    out = torch.empty((b, 3, s, s), dtype=torch.float32, device=dev)
    tr = per_sample_transform(s)

    per_ms, _ = time_ms(lambda x: run_per_sample(x, tr, out), sets, args.warmup, args.repeat)
    bat_ms, _ = time_ms(lambda x: run_batched(x, out), sets, args.warmup, args.repeat)
    assert torch.isfinite(out).all()

    moved = b * 3 * s * s * (1 + 4)  # u8 read once + f32 written once
    rows = [("torchvision_per_sample", per_ms), ("pytorch_batched_grid", bat_ms)]
    if args.metaug_ms:
        rows.append(("metaug_fused_kernel", args.metaug_ms))
    print(f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | batch {b}x3x{s}x{s} u8 -> f32")
    print(f"{'path':<26}{'ms/batch':>10}{'images/s':>12}{'GB/s':>8}")
    for name, ms in rows:
        print(f"{name:<26}{ms:>10.3f}{b / ms * 1e3:>12.0f}{moved / ms / 1e6:>8.0f}")
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "batch": b,
        "size": s,
        "torchvision_per_sample_ms": round(per_ms, 4),
        "pytorch_batched_grid_ms": round(bat_ms, 4),
    }
    if args.metaug_ms:
        result["metaug_fused_ms"] = args.metaug_ms
        result["speedup_vs_torchvision_per_sample"] = round(per_ms / args.metaug_ms, 2)
        result["speedup_vs_pytorch_batched_grid"] = round(bat_ms / args.metaug_ms, 2)
        print(f"metaug fused vs torchvision per-sample: {per_ms / args.metaug_ms:.1f}x (goal >= 10x); "
              f"vs batched grid_sample: {bat_ms / args.metaug_ms:.1f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
