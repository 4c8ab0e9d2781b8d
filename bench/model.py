"""Pix2PixHD training and inference throughput: images/s and TFLOP/s, and on a GPU the fraction of
bf16 peak and the peak memory.

    .venv/bin/python bench/model.py                 # quick network at 128 and paper network at 1088
    .venv/bin/python bench/model.py --only paper --steps 5 --peak-tflops 989
    .venv/bin/python bench/model.py --tiny          # every variant on a small network, in seconds

Cases: the quick config's network at its field size, and config/config.yaml's (182 M parameters)
at 1088 x 1088. A training step is the training code's own (vsgrid.model.train.train_step:
generator, both discriminator scales on fake, real and fake again, LSGAN, feature matching and the
config's L1, both Adam updates); inference is the generator alone under no_grad. Variants: fp32
eager; bf16 autocast (on a GPU with channels_last and cuDNN benchmark, the training code's
settings); the same under torch.compile. On a CPU only fp32 eager runs unless --variants says
otherwise (training there is fp32, and compiling the paper network takes minutes). Synthetic
random inputs: the data pipeline is not what is measured here. FLOPs come from
torch.utils.flop_counter (2 per multiply-add), counted during a warm-up step.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from measure import arguments
from torch.utils.flop_counter import FlopCounterMode

from vsgrid.config import load_config
from vsgrid.model.device import Device
from vsgrid.model.network import Losses, NetworkConfig, padded_size
from vsgrid.model.train import TrainSettings, build_networks, optimizers, train_step

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("fp32", "bf16", "bf16-compile")
# Tiny: the quick network on 64 x 64 images, every variant; aot_eager traces and differentiates the
# networks as inductor does but skips its C++ code generation (two minutes on two cores).
TINY = {"only": "quick", "size": 64, "steps": 2, "variants": list(VARIANTS), "backend": "aot_eager"}

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by device-name substring.
BF16_PEAK_TFLOPS = {
    "H200": 989.4,
    "H100 SXM": 989.4,
    "H100 80GB HBM3": 989.4,
    "H100 PCIe": 756.0,
    "H100": 989.4,
    "A100": 312.0,
    "L40S": 362.1,
}


@dataclass(frozen=True)
class Case:
    name: str
    net: NetworkConfig
    losses: Losses
    train: TrainSettings
    size: int
    batch: int

    @classmethod
    def of(cls, name: str, config: dict, batch: int) -> Case:
        net = NetworkConfig.from_config(config["network"])
        size = padded_size(config["data"]["synthetic"]["field_size"], net.n_downsample)
        losses = replace(Losses.from_config(config["network"]), lambda_vgg=0.0)
        return cls(name, net, losses, TrainSettings.from_config(config["train"]), size, batch)


def timed(fn, steps: int, device: Device, warmups: int, count: bool) -> tuple[float, int | None]:
    """Seconds per call after ``warmups`` calls, and (``count``) the FLOPs of the first call."""
    flops = None
    for k in range(warmups):
        if count and k == 0:
            with FlopCounterMode(display=False) as counter:
                fn()
            flops = counter.get_total_flops()
        else:
            fn()
    if device.is_gpu:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.is_gpu:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps, flops


def measure(case: Case, device: Device, compile_backend: str | None, steps: int, flops: dict):
    """Images/s of training and inference with ``device``'s settings (compiled with
    ``compile_backend`` unless None); TFLOP/s from ``flops``, which the first call fills."""
    generator, discriminator = build_networks(case.net, seed=0)
    generator, discriminator = device.prepare(generator), device.prepare(discriminator)
    opt_g, opt_d = optimizers(generator, discriminator, case.train)
    if compile_backend:
        generator = torch.compile(generator, backend=compile_backend)
        discriminator = torch.compile(discriminator, backend=compile_backend)
    shape = (case.batch, case.net.input_nc, case.size, case.size)
    bf = device.to(torch.rand(shape) * 2 - 1)
    target = device.to(torch.rand(case.batch, case.net.output_nc, case.size, case.size) * 2 - 1)
    if device.is_gpu:
        torch.cuda.reset_peak_memory_stats()

    def train():  # no VGG loss: neither config has one, and its weights are not at hand
        train_step(
            generator, discriminator, opt_g, opt_d, None, bf, target, case.net, case.losses, device
        )

    def infer():
        with torch.no_grad(), device.autocast():
            generator(bf)

    # A compiled module compiles again on its second call (grad mode, guards): warm up twice.
    warmups = 2 if compile_backend else 1
    result = {}
    for step, fn in (("train", train), ("infer", infer)):
        seconds, counted = timed(fn, steps, device, warmups, count=step not in flops)
        flops.setdefault(step, counted)
        result[f"{step}_img_s"] = case.batch / seconds
        result[f"{step}_tflops"] = flops[step] / seconds / 1e12
    if device.is_gpu:
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["quick", "paper"], help="one case only")
    parser.add_argument("--size", type=int, help="image side (default: each case's field size)")
    parser.add_argument(
        "--steps",
        type=int,
        help="timed steps per case (default: 20 quick, 2 paper on CPU, 10 on GPU)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        help="default: all on a GPU, fp32 on a CPU",
    )
    parser.add_argument("--backend", default="inductor", help="torch.compile's backend")
    parser.add_argument(
        "--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not in the built-in table"
    )
    args = arguments(parser, TINY)

    auto = Device.pick(load_config(ROOT / "config" / "config.yaml")["device"])
    name = (
        torch.cuda.get_device_name() if auto.is_gpu else platform.processor() or platform.machine()
    )
    print(f"device: {name}; torch {torch.__version__}; {torch.get_num_threads()} CPU threads")
    peak = args.peak_tflops or next(
        (v for k, v in BF16_PEAK_TFLOPS.items() if auto.is_gpu and k in name), None
    )
    settings = {
        "fp32": ("fp32 eager", Device(auto.torch_device, False, False), None),
        "bf16": ("bf16 autocast", replace(auto, bf16=True), None),
        "bf16-compile": (
            f"bf16 + compile ({args.backend})",
            replace(auto, bf16=True),
            args.backend,
        ),
    }
    chosen = args.variants or (VARIANTS if auto.is_gpu else ["fp32"])
    variants = [settings[v] for v in VARIANTS if v in chosen]  # eager first: it counts the FLOPs
    quick = load_config(ROOT / "config" / "quick.yaml")
    cases = [Case.of("quick", quick, quick["train"]["batch_size"])]
    cases.append(Case.of("paper", load_config(ROOT / "config" / "config.yaml"), 1))
    for case in cases:
        if args.only and case.name != args.only:
            continue
        case = replace(case, size=padded_size(args.size or case.size, case.net.n_downsample))
        steps = args.steps or (10 if auto.is_gpu else (20 if case.name == "quick" else 2))
        net = case.net
        print(
            f"\n{case.name} network (ngf {net.ngf}, {net.n_downsample} down, {net.n_blocks} blocks)"
            f" at {case.size} x {case.size}, batch {case.batch}, {steps} steps"
        )
        flops = {}
        for label, device, backend in variants:
            torch.backends.cudnn.benchmark = device.bf16
            r = measure(case, device, backend, steps, flops)
            line = (
                f"  {label:26s} train {r['train_img_s']:8.3g} img/s ({r['train_tflops']:.3g} TFLOP/s)"
                f"   infer {r['infer_img_s']:8.3g} img/s ({r['infer_tflops']:.3g} TFLOP/s)"
            )
            if "peak_mem_gib" in r:
                line += f"   peak {r['peak_mem_gib']:.1f} GiB"
            if peak:
                line += (
                    f"   of bf16 peak: train {100 * r['train_tflops'] / peak:.0f} %,"
                    f" infer {100 * r['infer_tflops'] / peak:.0f} %"
                )
            print(line, flush=True)
        print(
            f"  FLOPs: {flops['train'] / case.batch / 1e9:.3g} G per image per training step,"
            f" {flops['infer'] / case.batch / 1e9:.3g} G per image per inference"
        )


if __name__ == "__main__":
    main()
