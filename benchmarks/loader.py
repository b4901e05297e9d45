"""Training-reader throughput: decoded samples/s through ``make_loader`` (2 DataLoader workers)
against two baselines measured in the same run on the same samples:

- raw read: the shard bytes read with ``cat > /dev/null`` (what the disk / page cache delivers;
  no decoding, no batching): the upper bound;
- one file per sample: every sample ``torch.save``d to its own file and read back by a map-style
  DataLoader with the same workers and batch size (the layout shards replace).

Samples are real DRMNet samples (rendered at R = ``--refmap-res``), replicated under new keys to reach
``--samples`` so that rendering does not dominate the run. The page cache is warm for all three
(each is read once before it is timed): the figures compare software paths, not disks.

Run: ``python benchmarks/loader.py [--refmap-res 64 --samples 2048 --workers 2 --batch 32]``.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.reader import make_loader
from pipeline.samples import DatasetSettings, make_sample, plan_sample
from pipeline.shards import sample_key, shard_name, write_shard
from rendering.procedural_envmaps import make_envmap

SHARD_SIZE = 64


def render_samples(res: int, count: int) -> list[dict]:
    settings = DatasetSettings(refmap_res=res, spp=16)
    envmap = make_envmap("sky", 1, 64)
    return [
        make_sample(plan_sample(settings, "drmnet", "train", i, ["sky"]), envmap, settings)
        for i in range(count)
    ]


class OneFilePerSample(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        return torch.load(self.paths[index])


def timed(fn) -> tuple[float, int]:
    fn()  # warm the page cache (and the forkserver)
    start = time.perf_counter()
    count = fn()
    return time.perf_counter() - start, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refmap-res", type=int, default=64)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--distinct", type=int, default=32, help="samples actually rendered")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    rendered = render_samples(args.refmap_res, args.distinct)
    with tempfile.TemporaryDirectory(prefix="drmnet-loader-") as tmp:
        shards_dir, files_dir = Path(tmp, "shards"), Path(tmp, "files")
        files_dir.mkdir()
        paths = []
        for shard in range(-(-args.samples // SHARD_SIZE)):
            indices = range(shard * SHARD_SIZE, min(args.samples, (shard + 1) * SHARD_SIZE))
            pairs = [(sample_key("drmnet", "train", i), rendered[i % args.distinct]) for i in indices]
            write_shard(shards_dir / shard_name("drmnet", "train", shard), pairs)
            for key, sample in pairs:
                path = files_dir / f"{key}.pt"
                tensors = {
                    k: torch.from_numpy(np.asarray(v)) for k, v in sample.items() if isinstance(v, np.ndarray)
                }
                scalars = {k: v for k, v in sample.items() if not isinstance(v, np.ndarray)}
                torch.save({**tensors, **scalars}, path)
                paths.append(path)
        shard_files = sorted(shards_dir.glob("*.tar"))
        total_bytes = sum(p.stat().st_size for p in shard_files)

        def raw() -> int:
            subprocess.run(f"cat {' '.join(map(str, shard_files))} > /dev/null", shell=True, check=True)
            return args.samples

        loader = make_loader(shards_dir, args.batch, num_workers=args.workers, shuffle_buffer=256)

        def shards() -> int:
            return sum(len(batch["__key__"]) for batch in loader)

        files = torch.utils.data.DataLoader(
            OneFilePerSample(paths),
            batch_size=args.batch,
            shuffle=True,
            num_workers=args.workers,
            persistent_workers=True,
            multiprocessing_context="forkserver",
        )

        def per_file() -> int:
            return sum(len(batch["k"]) for batch in files)

        raw_s, _ = timed(raw)
        shard_s, shard_count = timed(shards)
        file_s, file_count = timed(per_file)
        assert shard_count == file_count == args.samples

    rate = {name: args.samples / s for name, s in (("raw", raw_s), ("shards", shard_s), ("files", file_s))}
    mib = total_bytes / 2**20
    each = total_bytes / args.samples / 1024
    count = len(shard_files)
    print(
        f"{args.samples} samples (R={args.refmap_res}, {each:.0f} KiB each): {mib:.0f} MiB in {count} shards"
    )
    print(f"  {args.workers} DataLoader workers, batch {args.batch}")
    print(f"  raw read (cat > /dev/null)   {rate['raw']:10.0f} samples/s  {mib / raw_s:8.0f} MiB/s")
    print(f"  shards -> make_loader        {rate['shards']:10.0f} samples/s  {mib / shard_s:8.0f} MiB/s")
    print(f"  one torch.save file/sample   {rate['files']:10.0f} samples/s  {mib / file_s:8.0f} MiB/s")
    ratios = rate["shards"] / rate["raw"], rate["shards"] / rate["files"]
    print(f"  ratios: shards/raw = {ratios[0]:.3f}, shards/files = {ratios[1]:.2f}")


if __name__ == "__main__":
    main()
