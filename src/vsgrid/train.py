"""Training one model (train set, stain, seed) with validation, early stopping and resume.

A model folder holds:

- ``last.pt``: everything needed to resume (both networks, both optimisers, the position in the
  epoch, the early-stopping state, the history); written atomically after every epoch and when
  SIGTERM arrives (SLURM preemption or time limit), so a rerun continues where it stopped;
- ``best.pt``: the generator with the lowest validation L1 so far, with the network shape, the
  stain and the training-set normalisation statistics (what :mod:`vsgrid.infer` loads);
- ``log.csv``: one row per epoch (losses, learning rate, validation L1 and PSNR, seconds);
- ``summary.json``: written last, when training has stopped (the workflow's output).

On a CPU a run is deterministic: the same seed gives the same weights, interrupted or not. Batch
order, crops and flips derive from (seed, epoch, image index), never from a global stream, so a
resumed epoch replays exactly the batches it had left.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from vsgrid.data import StainPairs, denormalize, normalization_stats
from vsgrid.errors import VsgridError
from vsgrid.grid import Model
from vsgrid.models import (
    GlobalGenerator,
    MultiscaleDiscriminator,
    NetworkConfig,
    VGGLoss,
    feature_matching_loss,
    learning_rate,
    load_vgg19_features,
    lsgan_loss,
    optimizers,
)
from vsgrid.seeds import rng_for
from vsgrid.store import store_path, write_table_atomically

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
INTERRUPTED_EXIT = 143  # 128 + SIGTERM, what a job killed by SLURM reports


class Interrupted(Exception):
    """SIGTERM arrived; the state was saved and a rerun resumes."""


# --------------------------------------------------------------------------- devices and files


@dataclass(frozen=True)
class Device:
    """Where and how the networks run: bf16 autocast and channels_last only on a GPU."""

    torch_device: torch.device
    bf16: bool
    channels_last: bool

    @classmethod
    def pick(cls, settings: dict) -> Device:
        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = settings.get("cudnn_benchmark", True)
            return cls(torch.device("cuda"), settings.get("bf16", True), settings.get("channels_last", True))
        return cls(torch.device("cpu"), False, False)

    @property
    def is_gpu(self) -> bool:
        return self.torch_device.type == "cuda"

    def autocast(self):
        return torch.autocast(self.torch_device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def to(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.torch_device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        module = module.to(self.torch_device)
        return module.to(memory_format=torch.channels_last) if self.channels_last else module


def save_atomically(obj, path: Path) -> None:
    """torch.save through a temporary file and a rename: a kill never leaves half a checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint; a missing, truncated or foreign file is a :class:`VsgridError`."""
    path = Path(path)
    if not path.is_file():
        raise VsgridError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        raise VsgridError(f"checkpoint {path} cannot be read (truncated or not a vsgrid checkpoint): {exc}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise VsgridError(f"checkpoint {path} is not a vsgrid checkpoint of format {CHECKPOINT_FORMAT}")
    return checkpoint


def check_compatible(checkpoint: dict, path: Path, net: NetworkConfig, stain: str | None = None) -> None:
    """A checkpoint must be for the expected stain and network shape."""
    if stain is not None and checkpoint["stain"] != stain:
        raise VsgridError(f"checkpoint {path} was trained for stain {checkpoint['stain']!r}, not {stain!r}")
    theirs = checkpoint["network"]
    differences = [f"{k} {theirs.get(k)} (config: {v})" for k, v in net.as_dict().items() if theirs.get(k) != v]
    if differences:
        raise VsgridError(f"checkpoint {path} has another network shape: {', '.join(differences)}")


# --------------------------------------------------------------------------- data


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad (B, C, H, W) at the bottom and right to multiples of ``multiple``.

    Returns the padded tensor and the original (H, W) to crop back to. Never resizes.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x, (height, width)


class Augmented(torch.utils.data.Dataset):
    """Crops and flips of a :class:`StainPairs`, drawn from (seed, epoch, index) alone."""

    def __init__(self, pairs: StainPairs, seed: int, epoch: int, crop_size: int | None, flips: bool):
        self.pairs, self.seed, self.epoch, self.crop_size, self.flips = pairs, seed, epoch, crop_size, flips

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        bf, target = self.pairs[i]
        rng = rng_for(self.seed, "augment", self.epoch, int(i))
        if self.crop_size and self.crop_size < min(bf.shape[-2:]):
            y = rng.integers(0, bf.shape[-2] - self.crop_size + 1)
            x = rng.integers(0, bf.shape[-1] - self.crop_size + 1)
            bf, target = (a[:, y : y + self.crop_size, x : x + self.crop_size] for a in (bf, target))
        if self.flips:
            for axis in (-1, -2):
                if rng.random() < 0.5:
                    bf, target = np.flip(bf, axis), np.flip(target, axis)
        return torch.from_numpy(np.ascontiguousarray(bf)), torch.from_numpy(np.ascontiguousarray(target))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The shuffled batches of one epoch (the last one may be smaller)."""
    order = rng_for(seed, "order", epoch).permutation(n).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


# --------------------------------------------------------------------------- validation


def image_psnr(real: np.ndarray, pred: np.ndarray) -> float:
    """PSNR in dB with the data range of the real image; identical images give +inf."""
    mse = float(np.mean((real.astype(np.float64) - pred.astype(np.float64)) ** 2))
    data_range = float(real.max()) - float(real.min())
    if mse == 0:
        return math.inf
    return 10 * math.log10(max(data_range, 1.0) ** 2 / mse)


def validate(generator, pairs: StainPairs, stats: dict, device: Device, multiple: int, batch_size: int) -> dict:
    """Mean L1 and PSNR of the generator on a split, in the stain's 16-bit units (``stats``: the stain's)."""
    l1, psnr = [], []
    loader = DataLoader(pairs, batch_size=batch_size, shuffle=False)
    with torch.no_grad():
        for bf, target in loader:
            padded, (height, width) = pad_to_multiple(device.to(bf), multiple)
            with device.autocast():
                fake = generator(padded)[..., :height, :width]
            fake_counts = np.clip(denormalize(fake.float().cpu().numpy(), stats), 0, 65535)
            real_counts = denormalize(target.numpy(), stats)
            for real, pred in zip(real_counts, fake_counts):
                l1.append(float(np.mean(np.abs(real - pred))))
                psnr.append(image_psnr(real, pred))
    return {"val_l1": float(np.mean(l1)), "val_psnr": float(np.mean(psnr))}


# --------------------------------------------------------------------------- training


class _SigtermFlag:
    """Turns SIGTERM into a flag the training loop checks between batches."""

    def __init__(self):
        self.raised = False

    def __enter__(self):
        self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self.previous)


def init_weights(module: torch.nn.Module) -> None:
    """Pix2PixHD's initialisation: N(0, 0.02) convolution weights, zero biases."""
    if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
        torch.nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            torch.nn.init.zeros_(module.bias)


def build_networks(net: NetworkConfig, seed: int):
    torch.manual_seed(seed)
    generator, discriminator = GlobalGenerator(net), MultiscaleDiscriminator(net)
    generator.apply(init_weights)
    discriminator.apply(init_weights)
    return generator, discriminator


def train(config: dict, model: Model, out_dir: str | Path, progress: bool = True) -> dict:
    """Train (or resume, or find finished) one model; returns its summary.

    Raises :class:`Interrupted` after saving when SIGTERM arrives.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net, settings = NetworkConfig.from_config(config["model"]), config["train"]
    device = Device.pick(settings)
    if device.torch_device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    store = store_path(config["data"]["dir"], model.train_set.name)

    generator, discriminator = build_networks(net, model.seed)
    opt_g, opt_d = optimizers(generator, discriminator, settings)
    state = {"epoch": 0, "batch": 0, "best_l1": math.inf, "best_epoch": None, "bad_epochs": 0, "history": [], "stop_reason": None}
    last_path = out / "last.pt"
    if last_path.exists():
        checkpoint = load_checkpoint(last_path)
        check_compatible(checkpoint, last_path, net, model.stain)
        if (checkpoint["train_set"], checkpoint["seed"]) != (model.train_set.name, model.seed):
            raise VsgridError(f"{last_path} belongs to {checkpoint['train_set']} seed {checkpoint['seed']}, not {model.name}")
        generator.load_state_dict(checkpoint["generator"])
        discriminator.load_state_dict(checkpoint["discriminator"])
        opt_g.load_state_dict(checkpoint["opt_g"])
        opt_d.load_state_dict(checkpoint["opt_d"])
        state = checkpoint["state"]
        stats = checkpoint["stats"]
        log.info("resuming %s at epoch %d, batch %d", model.name, state["epoch"] + 1, state["batch"])
    else:
        stats = normalization_stats(store, "train", channels=("bf", model.stain))

    if state["stop_reason"] is None:
        _fit(config, model, net, device, generator, discriminator, opt_g, opt_d, state, stats, store, out, progress)
    summary = {
        "model": model.name,
        "epochs": len(state["history"]),
        "best_epoch": state["best_epoch"],
        "best_val_l1": state["best_l1"],
        "stop_reason": state["stop_reason"],
        "device": str(device.torch_device),
    }
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "summary.json")
    return summary


def _fit(config, model, net, device, generator, discriminator, opt_g, opt_d, state, stats, store, out, progress):
    settings, model_cfg = config["train"], config["model"]
    generator, discriminator = device.prepare(generator), device.prepare(discriminator)
    for optimizer in (opt_g, opt_d):  # optimiser state follows its parameters' device
        for param_state in optimizer.state.values():
            for key, value in param_state.items():
                if torch.is_tensor(value) and key != "step":
                    param_state[key] = value.to(device.torch_device)
    vgg = None
    if model_cfg["lambda_vgg"] > 0:
        if not model_cfg["vgg_weights"]:
            raise VsgridError("model.lambda_vgg > 0 needs model.vgg_weights (a local torchvision vgg19-dcbb9e9d.pth)")
        vgg = device.prepare(VGGLoss(load_vgg19_features(model_cfg["vgg_weights"])))
    train_pairs = StainPairs(store, "train", model.stain, stats)
    val_pairs = StainPairs(store, "val", model.stain, stats)
    multiple = 2**net.n_downsample
    loader_options = {"num_workers": settings["workers"], "pin_memory": True} if device.is_gpu else {}

    def save_last():
        save_atomically(
            {
                "format": CHECKPOINT_FORMAT,
                "kind": "training",
                "network": net.as_dict(),
                "train_set": model.train_set.name,
                "stain": model.stain,
                "seed": model.seed,
                "stats": stats,
                "generator": generator.state_dict(),
                "discriminator": discriminator.state_dict(),
                "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(),
                "state": state,
            },
            out / "last.pt",
        )

    with _SigtermFlag() as sigterm:
        while state["stop_reason"] is None:
            epoch, started = state["epoch"], time.perf_counter()
            lr = learning_rate(epoch, settings)
            for optimizer in (opt_g, opt_d):
                for group in optimizer.param_groups:
                    group["lr"] = lr
            batches = epoch_batches(len(train_pairs), settings["batch_size"], model.seed, epoch)
            dataset = Augmented(train_pairs, model.seed, epoch, settings["crop_size"], settings["flips"])
            loader = DataLoader(dataset, batch_sampler=batches[state["batch"] :], **loader_options)
            sums = state.setdefault("sums", {})
            bar = tqdm(loader, total=len(batches), initial=state["batch"], desc=f"{model.name} epoch {epoch + 1}", disable=not progress, unit="batch")
            for bf, target in bar:
                losses = _step(generator, discriminator, opt_g, opt_d, vgg, device.to(bf), device.to(target), net, model_cfg, device, multiple)
                for key, value in losses.items():
                    sums[key] = sums.get(key, 0.0) + value
                state["batch"] += 1
                bar.set_postfix(g=f"{losses['loss_g']:.3f}", d=f"{losses['loss_d']:.3f}")
                if sigterm.raised:
                    save_last()
                    raise Interrupted(f"{model.name}: SIGTERM at epoch {epoch + 1}, batch {state['batch']}; saved {out / 'last.pt'}")

            metrics = validate(generator, val_pairs, stats[model.stain], device, multiple, settings["batch_size"])
            row = {"epoch": epoch + 1, "lr": lr, **{k: v / len(batches) for k, v in sums.items()}, **metrics}
            row["seconds"] = time.perf_counter() - started
            improved = metrics["val_l1"] < state["best_l1"] - settings["min_delta"]
            row["best"] = improved
            if not all(math.isfinite(row[k]) for k in ("loss_g", "loss_d", "val_l1")):
                raise VsgridError(f"{model.name}: training diverged at epoch {epoch + 1} ({row}); {out / 'best.pt'} keeps the last good generator")
            if improved:
                state.update(best_l1=metrics["val_l1"], best_epoch=epoch + 1, bad_epochs=0)
                save_atomically(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "kind": "generator",
                        "network": net.as_dict(),
                        "train_set": model.train_set.name,
                        "stain": model.stain,
                        "seed": model.seed,
                        "stats": stats,
                        "epoch": epoch + 1,
                        "val": metrics,
                        "generator": generator.state_dict(),
                    },
                    out / "best.pt",
                )
            else:
                state["bad_epochs"] += 1
            state["history"].append(row)
            state.update(epoch=epoch + 1, batch=0, sums={})
            if state["bad_epochs"] >= settings["patience"]:
                state["stop_reason"] = f"no better validation L1 for {settings['patience']} epochs"
            elif state["epoch"] >= settings["max_epochs"]:
                state["stop_reason"] = f"reached max_epochs ({settings['max_epochs']})"
            save_last()
            write_table_atomically(pd.DataFrame(state["history"]), out / "log.csv")
            log.info("%s epoch %d: %s", model.name, epoch + 1, ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float)))
            if sigterm.raised:
                raise Interrupted(f"{model.name}: SIGTERM after epoch {epoch + 1}; saved {out / 'last.pt'}")


def _step(generator, discriminator, opt_g, opt_d, vgg, bf, target, net, model_cfg, device, multiple) -> dict:
    """One Pix2PixHD iteration: generator update, then discriminator update."""
    padded, (height, width) = pad_to_multiple(bf, multiple)
    with device.autocast():
        fake = generator(padded)[..., :height, :width]
        pred_fake_for_d = discriminator(torch.cat([bf, fake.detach()], 1))
        pred_real = discriminator(torch.cat([bf, target], 1))
        pred_fake = discriminator(torch.cat([bf, fake], 1))
    loss_d = 0.5 * (lsgan_loss(pred_fake_for_d, False) + lsgan_loss(pred_real, True))
    loss_gan = lsgan_loss(pred_fake, True)
    loss_fm = model_cfg["lambda_feat"] * feature_matching_loss(pred_fake, pred_real, net.n_layers_D)
    loss_vgg = model_cfg["lambda_vgg"] * vgg(fake, target) if vgg is not None else torch.zeros((), device=bf.device)
    loss_g = loss_gan + loss_fm + loss_vgg

    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    losses = {"loss_g": loss_g, "loss_d": loss_d, "loss_gan": loss_gan, "loss_fm": loss_fm, "loss_vgg": loss_vgg}
    return {name: float(value.detach()) for name, value in losses.items()}
