"""Pix2PixHD training and inference throughput: images/s, and on a GPU the fraction of bf16 peak.

    .venv/bin/python bench/model.py                 # quick network at 128 and paper network at 1088
    .venv/bin/python bench/model.py --only paper --steps 5 --peak-tflops 989

Cases: the quick config's network at its field size, and config/config.yaml's (182 M parameters)
at 1088 x 1088. On a CPU: fp32 eager. On a GPU: fp32 eager and the training code's own settings
(bf16 autocast, channels_last, cuDNN benchmark) side by side, with peak memory. Synthetic random
inputs: the data pipeline is not what is measured here.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from vsgrid.config import load_config
from vsgrid.model.network import (
    GlobalGenerator,
    MultiscaleDiscriminator,
    NetworkConfig,
    forward_flops,
    lsgan_loss,
    optimizers,
    padded_size,
)
from vsgrid.model.train import Device, _step, build_networks

ROOT = Path(__file__).resolve().parents[1]

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


def training_flops(net: NetworkConfig, size: int, batch: int) -> int:
    """FLOPs of one training step (three discriminator passes, generator and discriminator
    backward), counted on the meta device; the optimiser update is negligible beside it."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        generator, discriminator = GlobalGenerator(net), MultiscaleDiscriminator(net)
        bf, target = (
            torch.empty(batch, net.input_nc, size, size),
            torch.empty(batch, net.output_nc, size, size),
        )
    with FlopCounterMode(display=False) as counter:
        fake = generator(bf)
        loss_d = lsgan_loss(discriminator(torch.cat([bf, fake.detach()], 1)), False) + lsgan_loss(
            discriminator(torch.cat([bf, target], 1)), True
        )
        loss_g = lsgan_loss(discriminator(torch.cat([bf, fake], 1)), True)
        loss_g.backward(retain_graph=True)
        loss_d.backward()
    return counter.get_total_flops()


def timed(fn, steps: int, device: Device) -> float:
    """Seconds per call after one warm-up call."""
    fn()
    if device.is_gpu:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.is_gpu:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def measure(config: dict, size: int, batch: int, steps: int, device: Device) -> dict:
    net = NetworkConfig.from_config(config["model"])
    generator, discriminator = build_networks(net, seed=0)
    generator, discriminator = device.prepare(generator), device.prepare(discriminator)
    opt_g, opt_d = optimizers(generator, discriminator, config["train"])
    bf = device.to(torch.rand(batch, net.input_nc, size, size) * 2 - 1)
    target = device.to(torch.rand(batch, net.output_nc, size, size) * 2 - 1)
    multiple = 2**net.n_downsample
    if device.is_gpu:
        torch.cuda.reset_peak_memory_stats()

    def train_step():
        _step(
            generator,
            discriminator,
            opt_g,
            opt_d,
            None,
            bf,
            target,
            net,
            config["model"],
            device,
            multiple,
        )

    def infer_step():
        with torch.no_grad(), device.autocast():
            generator(bf)

    train_s = timed(train_step, steps, device)
    infer_s = timed(infer_step, steps, device)
    result = {"train_img_s": batch / train_s, "infer_img_s": batch / infer_s}
    result["train_tflops"] = training_flops(net, size, batch) / train_s / 1e12
    result["infer_tflops"] = (
        forward_flops(GlobalGenerator(net), (batch, net.input_nc, size, size)) / infer_s / 1e12
    )
    if device.is_gpu:
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["quick", "paper"], help="one case only")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per case (default: 20 quick, 2 paper on CPU, 10 on GPU)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not in the built-in table"
    )
    args = parser.parse_args()

    cases = {
        "quick": load_config(ROOT / "config" / "quick.yaml"),
        "paper": load_config(ROOT / "config" / "config.yaml"),
    }
    auto = Device.pick({})
    name = (
        torch.cuda.get_device_name() if auto.is_gpu else platform.processor() or platform.machine()
    )
    print(f"device: {name}; torch {torch.__version__}; {torch.get_num_threads()} CPU threads")
    peak = args.peak_tflops or next(
        (v for k, v in BF16_PEAK_TFLOPS.items() if auto.is_gpu and k in name), None
    )
    variants = {"fp32 eager": Device(auto.torch_device, False, False)}
    if auto.is_gpu:
        variants["bf16 + channels_last"] = auto
    for case, config in cases.items():
        if args.only and case != args.only:
            continue
        net = NetworkConfig.from_config(config["model"])
        size = padded_size(config["data"]["synthetic"]["field_size"], net.n_downsample)
        batch = config["train"]["batch_size"] if case == "quick" else 1
        steps = args.steps or (10 if auto.is_gpu else (20 if case == "quick" else 2))
        print(
            f"\n{case} network (ngf {net.ngf}, {net.n_downsample} down, {net.n_blocks} blocks) at {size} x {size}, batch {batch}, {steps} steps"
        )
        for variant, device in variants.items():
            torch.backends.cudnn.benchmark = device.bf16
            r = measure(config, size, batch, steps, device)
            line = f"  {variant:22s} train {r['train_img_s']:8.3g} img/s ({r['train_tflops']:.3f} TFLOP/s)   infer {r['infer_img_s']:8.3g} img/s ({r['infer_tflops']:.3f} TFLOP/s)"
            if "peak_mem_gib" in r:
                line += f"   peak {r['peak_mem_gib']:.1f} GiB"
            if peak:
                line += f"   of bf16 peak: train {100 * r['train_tflops'] / peak:.0f} %, infer {100 * r['infer_tflops'] / peak:.0f} %"
            print(line, flush=True)


if __name__ == "__main__":
    main()
