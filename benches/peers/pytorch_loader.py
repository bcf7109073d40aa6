#!/usr/bin/env python3
"""PyTorch DataLoader peer for metaug's CPU loader.

Reads the same JPEG photos metaug packs (`../shared/data/photos-jpeg`), decodes
them with Pillow and augments them with torchvision `transforms.v2`, set to the
same work as metaug's `default` policy at 224x224 float32:

  crop    p=0.8  RandomResizedCrop(224, scale=(0.35, 1), ratio=(3/4, 4/3)),
                 otherwise Resize((224, 224))           (metaug: resize always)
  rotate  p=0.5  RandomRotation(15, bilinear)
  flip    p=0.5  RandomHorizontalFlip
  noise   p=0.3  additive N(0, sigma^2), sigma ~ U(0, 0.05), on [0, 1] pixels
  then Normalize(ImageNet mean/std) in float32 ([0, 1] scale, as metaug).

--backend pil (default, the standard torchvision recipe): geometric ops on
PIL images, whose resizes are antialiased; ToImage + ToDtype(float32,
scale=True) convert before noise and Normalize. --backend tensor: ToImage
first, then the geometric ops on uint8 tensors with antialias=False, which is
the same interpolation as metaug's (plain bilinear, no antialias). Batches are collated to [B, 3, 224, 224] float32 by the default
collate_fn, like metaug's NCHW f32 batches.

Timing: one DataLoader with persistent workers; the first pass warms up
(worker start, page cache) and is reported apart; the rate is the total
images of passes 2..P over their wall time, plus the median per-pass rate.
CPU seconds of the main process and the workers over the same passes (from
/proc) give images per CPU-second, which a machine shared with other work
does not change the way it changes wall-clock rates.
Prints one JSON object on stdout.
"""

import argparse
import json
import os
import statistics
import sys
import time


def parse_args():
    here = os.path.dirname(os.path.abspath(__file__))
    default_dir = os.path.normpath(os.path.join(here, "..", "..", "..", "shared", "data", "photos-jpeg"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=default_dir, help="folder of JPEG files (default: %(default)s)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (0 = main process)")
    p.add_argument("--passes", type=int, default=4, help="passes over the folder, the first is warm-up")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--policy", choices=["default", "none"], default="default",
                   help="none: resize + normalise only (like metaug --policy none)")
    p.add_argument("--backend", choices=["pil", "tensor"], default="pil",
                   help="run the geometric transforms on PIL images or on uint8 tensors")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main():
    args = parse_args()
    import torch
    import torchvision
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    # Workers use one intra-op thread each (PyTorch's default in workers);
    # the main process only collates and iterates.
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    files = sorted(
        os.path.join(args.dir, f) for f in os.listdir(args.dir) if f.lower().endswith((".jpeg", ".jpg"))
    )
    if not files:
        sys.exit(f"no JPEG files in {args.dir}")

    class RandomNoise(torch.nn.Module):
        """Additive Gaussian noise with sigma ~ U(0, max_sigma), applied with probability p."""

        def __init__(self, p, max_sigma):
            super().__init__()
            self.p, self.max_sigma = p, max_sigma

        def forward(self, x):
            if torch.rand(()) < self.p:
                sigma = float(torch.rand(())) * self.max_sigma
                x = x + sigma * torch.randn_like(x)
            return x

    s = args.size
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    bil = v2.InterpolationMode.BILINEAR
    aa = args.backend == "pil"  # PIL always antialiases; tensors: plain bilinear like metaug
    if args.policy == "default":
        geometric = [
            v2.RandomChoice(
                [v2.RandomResizedCrop(s, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3), interpolation=bil, antialias=aa),
                 v2.Resize((s, s), interpolation=bil, antialias=aa)],
                p=[0.8, 0.2],
            ),
            v2.RandomApply([v2.RandomRotation(15, interpolation=bil)], p=0.5),
            v2.RandomHorizontalFlip(0.5),
        ]
        noise = [RandomNoise(0.3, 0.05)]
    else:
        geometric = [v2.Resize((s, s), interpolation=bil, antialias=aa)]
        noise = []
    to_float = [v2.ToDtype(torch.float32, scale=True)]
    if args.backend == "pil":
        steps = geometric + [v2.ToImage()] + to_float
    else:
        steps = [v2.ToImage()] + geometric + to_float
    transform = v2.Compose(steps + noise + [v2.Normalize(mean, std)])

    class Photos(Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            with Image.open(files[i]) as im:
                img = im.convert("RGB")
            return transform(img), 0

    loader = DataLoader(
        Photos(),
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        drop_last=False,
    )

    tick = os.sysconf("SC_CLK_TCK")

    def cpu_seconds():
        """CPU seconds of this process and of the loader's worker processes."""
        pids = [os.getpid()]
        it = getattr(loader, "_iterator", None)
        pids += [w.pid for w in getattr(it, "_workers", []) if w.pid]
        total = 0.0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                pass
        return total

    rates, counts, times, cpus = [], [], [], []
    shape = None
    for _ in range(args.passes):
        t0 = time.perf_counter()
        c0 = cpu_seconds()
        n = 0
        for x, _y in loader:
            n += x.shape[0]
            shape = list(x.shape)
        dt = time.perf_counter() - t0
        cpus.append(cpu_seconds() - c0)
        counts.append(n)
        times.append(dt)
        rates.append(n / dt)
    timed = slice(1, None) if args.passes > 1 else slice(0, None)
    total_images = sum(counts[timed])
    total_time = sum(times[timed])
    print(json.dumps({
        "peer": "pytorch-dataloader",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": Image.__version__,
        "workers": args.workers,
        "batch": args.batch,
        "batch_shape": shape,
        "dtype": "float32",
        "policy": args.policy,
        "backend": args.backend,
        "images_per_pass": counts[0],
        "passes": args.passes,
        "warmup_pass_images_per_s": round(rates[0], 1),
        "images_per_s": round(total_images / total_time, 1),
        "median_pass_images_per_s": round(statistics.median(rates[timed]), 1),
        # main process + workers; the first pass's count misses the time
        # before the workers started
        "cpu_seconds": round(sum(cpus[timed]), 2),
        "cores_busy": round(sum(cpus[timed]) / total_time, 2),
        "images_per_cpu_s": round(total_images / max(sum(cpus[timed]), 1e-9), 1),
    }))


if __name__ == "__main__":
    main()
