"""What knowing where a virtual stain cannot be trusted costs: per image, and in memory.

    .venv/bin/python bench/trust.py                    # paper network at 1088, then the quick grid's
    .venv/bin/python bench/trust.py --network quick --size 128 --images 8
    .venv/bin/python bench/trust.py --tiny

Per image (in this process, random weights, one field at a time): the generator's pass alone
(what inference did before), the same pass with the OOD score (the trunk's output pooled and
scored against a reference), and with the test-time augmentation (TTA) spread (7 more passes on
the flips and quarter turns): wall and CPU seconds per image and the ratio to the pass alone.

Memory: `vsgrid infer` of the quick network (trained 1 epoch) on test splits of
``--test-images`` fields each, with the TTA spread and the OOD score (the workflow's default)
and without TTA: wall, CPU seconds per image and the peak resident memory of the process. The
same peak for every test split means inference streams the uncertainties as it streams the
prediction.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from measure import arguments, run, run_workflow

from vsgrid.config import load_config
from vsgrid.model.network import GlobalGenerator, NetworkConfig, pad_to_multiple
from vsgrid.model.reference import OodReference
from vsgrid.model.uncertainty import pool, split_generator, tta_spread

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"paper": ROOT / "config" / "config.yaml", "quick": ROOT / "config" / "quick.yaml"}
TINY = {"network": "quick", "size": 64, "images": 2, "test_images": [8, 16]}


def per_image(net: NetworkConfig, size: int, images: int) -> dict[str, tuple[float, float]]:
    """Wall and CPU seconds per image of the pass alone, with the OOD score, with the TTA spread."""
    torch.manual_seed(0)
    generator = GlobalGenerator(net).eval()
    trunk, head, multiple = split_generator(generator)
    x = torch.randn(1, 1, size, size)
    features = 2 * net.ngf * 2**net.n_downsample  # each bottleneck channel's mean and SD
    reference = OodReference.fit(np.random.default_rng(0).normal(size=(64, features)))

    def forward(field):
        padded, (h, w) = pad_to_multiple(field, net.multiple)
        return generator(padded)[..., :h, :w]

    def with_ood(field):
        padded, (h, w) = pad_to_multiple(field, net.multiple)
        bottleneck = trunk(padded)
        reference.score(pool(bottleneck, h, w, multiple))
        return head(bottleneck)[..., :h, :w]

    cases = {
        "pass alone": forward,
        "+ OOD score": with_ood,
        "+ OOD and TTA": lambda field: tta_spread(forward, field, first=with_ood(field)),
    }
    found = {}
    with torch.no_grad():
        forward(x)  # warm-up: allocations and kernels chosen once
        for name, case in cases.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(images):
                case(x)
            found[name] = (
                (time.perf_counter() - wall) / images,
                (time.process_time() - cpu) / images,
            )
    return found


def inference_memory(
    work: Path, test_images: list[int]
) -> list[tuple[int, str, float, float, float]]:
    """(test images, variant, wall s, CPU s per image, peak MB) of `vsgrid infer` per test split."""
    rows = []
    for n in test_images:
        folder = work / f"test{n}"
        config = yaml.safe_load(CONFIGS["quick"].read_text())
        config["grid"].update(
            cell_types=["lung"], phenotypes=["nontoxic"], stains=["dapi"], controls=[]
        )
        config["data"].update(dir=str(folder / "data"), splits={"train": 16, "val": 8, "test": n})
        config["data"]["synthetic"].update(plates_per_cell_type=2)
        config["train"].update(max_epochs=1, lr_decay_start=1)
        config["evaluation"]["screen"]["enabled"] = False
        config["results"]["dir"] = str(folder / "results")
        folder.mkdir(parents=True, exist_ok=True)
        run_workflow(config, folder, until="train")
        model = folder / "results" / "models" / "lung-nontoxic.dapi.s0"
        for variant, tta in (("TTA + OOD", True), ("OOD only", False)):
            config["infer"]["tta"] = tta
            path = folder / f"{variant.split()[0]}.yaml"
            path.write_text(yaml.safe_dump(config))
            out = folder / f"predictions-{tta}"
            command = ["vsgrid", "infer", "--config", str(path), "--model", str(model)]
            wall, peak, cpu = run(
                [*command, "--test-set", "lung-nontoxic", "--out", str(out), "--quiet"], folder
            )
            rows.append((n, variant, wall, cpu / n, peak))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=sorted(CONFIGS), default="paper")
    parser.add_argument("--size", type=int, default=1088, help="image side (pixels)")
    parser.add_argument("--images", type=int, default=2, help="images timed per case")
    parser.add_argument("--test-images", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--out", type=Path, default=Path("/tmp/vsgrid-bench-trust"))
    args = arguments(parser, TINY)
    torch.set_num_threads(torch.get_num_threads())
    net = NetworkConfig.from_config(load_config(CONFIGS[args.network])["network"])
    print(f"{args.network} network, {args.size} x {args.size}, {torch.get_num_threads()} threads:")
    found = per_image(net, args.size, args.images)
    alone = found["pass alone"][1]
    for name, (wall, cpu) in found.items():
        print(
            f"  {name:14s} {wall:8.3f} s wall {cpu:8.3f} s CPU per image ({cpu / alone:.2f} x the pass alone)"
        )
    print("vsgrid infer, quick network, 128 x 128 fields:")
    for n, variant, wall, cpu, peak in inference_memory(args.out, args.test_images):
        print(
            f"  {n:4d} test images  {variant:10s} {wall:6.1f} s wall {cpu:7.3f} s CPU per image  peak {peak:6.0f} MB"
        )


if __name__ == "__main__":
    main()
