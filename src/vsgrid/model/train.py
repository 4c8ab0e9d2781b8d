"""Training one model (train set, stain, seed) with validation, early stopping and resume.

A model folder holds:

- ``last.pt``: everything needed to resume (both networks, both optimisers, the position in the
  epoch, the early-stopping state, the history); written atomically after every epoch and when
  SIGTERM arrives (SLURM preemption or time limit), so a rerun continues where it stopped;
- ``best.pt``: the generator with the lowest validation L1 so far (what inference loads);
  ``last.pt`` holds a copy, from which a rerun rewrites a lost ``best.pt`` (deleted by hand, or
  by Snakemake, whose output it is, when a job fails or reruns);
- ``log.csv``: one row per epoch (losses, learning rate, validation L1 and PSNR, seconds);
- ``settings.json``: the settings it is trained under (network, train, device and data sections,
  and the identity of the store it reads);
- ``summary.json``: written last, when training has stopped (the workflow's output);
- ``stalled.json``: written when SIGTERM ends a job that completed no epoch: a job of the same
  time limit would do no better, so the next resume stops with an error instead of looping.

A rerun with the same settings resumes an unfinished training from ``last.pt`` (and finds a
finished one finished). A rerun with other settings, or of a finished training whose
``summary.json`` is gone (Snakemake's ``--forcerun`` deletes it), removes the folder's
checkpoints and trains afresh. One trainer at a time holds the folder (a lock file).

On a CPU a run is deterministic: the same seed gives the same weights, interrupted or not. Batch
order, crops and flips derive from (seed, epoch, image index), never from a global stream, so a
resumed epoch replays exactly the batches it had left.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from vsgrid.config import result_settings
from vsgrid.data.pairs import StainPairs, denormalize, normalization_stats
from vsgrid.data.store import U16_MAX, open_store
from vsgrid.errors import VsgridError
from vsgrid.evaluation.metrics import psnr
from vsgrid.files import folder_lock, remove, remove_stale_temporaries, write_table, write_text
from vsgrid.grid import Model
from vsgrid.layout import Layout
from vsgrid.model import checkpoint
from vsgrid.model.device import Device
from vsgrid.model.network import (
    GlobalGenerator,
    Losses,
    MultiscaleDiscriminator,
    NetworkConfig,
    VGGLoss,
    feature_matching_loss,
    init_weights,
    load_vgg19_features,
    lsgan_loss,
    pad_to_multiple,
)
from vsgrid.seeds import rng_for

log = logging.getLogger(__name__)

INTERRUPTED_EXIT = 143  # 128 + SIGTERM, what a job killed by SLURM reports
STALLED = "stalled.json"


class Interrupted(Exception):
    """SIGTERM arrived; the state was saved and a rerun resumes."""


@dataclass(frozen=True)
class TrainSettings:
    """The ``train`` section of the config."""

    batch_size: int
    lr: float
    beta1: float
    beta2: float
    max_epochs: int
    lr_decay_start: int
    patience: int
    min_delta: float
    crop_size: int | None
    flips: bool
    workers: int
    preload_mb: float

    @classmethod
    def from_config(cls, train: dict) -> TrainSettings:
        return cls(**{k: train[k] for k in cls.__dataclass_fields__})

    def learning_rate(self, epoch: int) -> float:
        """Constant for ``lr_decay_start`` epochs, then linear decay to 0 at ``max_epochs``."""
        start, end = self.lr_decay_start, self.max_epochs
        if epoch < start or end <= start:
            return self.lr
        return self.lr * max(0.0, 1.0 - (epoch - start) / (end - start))


# --------------------------------------------------------------------------- data


class Augmented(torch.utils.data.Dataset):
    """Crops and flips of a :class:`StainPairs`, drawn from (seed, epoch, index) alone."""

    def __init__(
        self, pairs: StainPairs, seed: int, epoch: int, crop_size: int | None, flips: bool
    ):
        self.pairs, self.seed, self.epoch, self.crop_size, self.flips = (
            pairs,
            seed,
            epoch,
            crop_size,
            flips,
        )

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        bf, target = self.pairs[i]
        rng = rng_for(self.seed, "augment", self.epoch, int(i))
        if self.crop_size and self.crop_size < min(bf.shape[-2:]):
            y = rng.integers(0, bf.shape[-2] - self.crop_size + 1)
            x = rng.integers(0, bf.shape[-1] - self.crop_size + 1)
            bf, target = (
                a[:, y : y + self.crop_size, x : x + self.crop_size] for a in (bf, target)
            )
        if self.flips:
            for axis in (-1, -2):
                if rng.random() < 0.5:
                    bf, target = np.flip(bf, axis), np.flip(target, axis)
        return torch.from_numpy(np.ascontiguousarray(bf)), torch.from_numpy(
            np.ascontiguousarray(target)
        )


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The shuffled batches of one epoch (the last one may be smaller)."""
    order = rng_for(seed, "order", epoch).permutation(n).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


# --------------------------------------------------------------------------- one step, one validation


def build_networks(net: NetworkConfig, seed: int):
    torch.manual_seed(seed)
    generator, discriminator = GlobalGenerator(net), MultiscaleDiscriminator(net)
    generator.apply(init_weights)
    discriminator.apply(init_weights)
    return generator, discriminator


def optimizers(generator: torch.nn.Module, discriminator: torch.nn.Module, settings: TrainSettings):
    """Adam for each network (paper: lr 2e-4, betas 0.5, 0.999)."""
    betas = (settings.beta1, settings.beta2)
    return (
        torch.optim.Adam(generator.parameters(), lr=settings.lr, betas=betas),
        torch.optim.Adam(discriminator.parameters(), lr=settings.lr, betas=betas),
    )


def train_step(
    generator,
    discriminator,
    opt_g,
    opt_d,
    vgg,
    bf,
    target,
    net: NetworkConfig,
    losses: Losses,
    device: Device,
) -> dict:
    """One Pix2PixHD iteration: generator update, then discriminator update."""
    padded, (height, width) = pad_to_multiple(bf, net.multiple)
    with device.autocast():
        fake = generator(padded)[..., :height, :width]
        pred_fake_for_d = discriminator(torch.cat([bf, fake.detach()], 1))
        pred_real = discriminator(torch.cat([bf, target], 1))
        pred_fake = discriminator(torch.cat([bf, fake], 1))
    loss_d = 0.5 * (lsgan_loss(pred_fake_for_d, False) + lsgan_loss(pred_real, True))
    loss_gan = lsgan_loss(pred_fake, True)
    loss_fm = losses.lambda_feat * feature_matching_loss(pred_fake, pred_real, net.n_layers_D)
    loss_l1 = losses.lambda_l1 * torch.nn.functional.l1_loss(fake, target)
    loss_vgg = (
        losses.lambda_vgg * vgg(fake, target)
        if vgg is not None
        else torch.zeros((), device=bf.device)
    )
    loss_g = loss_gan + loss_fm + loss_l1 + loss_vgg

    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    values = {
        "loss_g": loss_g,
        "loss_d": loss_d,
        "loss_gan": loss_gan,
        "loss_fm": loss_fm,
        "loss_l1": loss_l1,
        "loss_vgg": loss_vgg,
    }
    return {name: float(value.detach()) for name, value in values.items()}


def validate(
    generator, pairs: StainPairs, stats: dict, device: Device, multiple: int, batch_size: int
) -> dict:
    """Mean L1 and PSNR of the generator on a split, in the stain's 16-bit units (``stats``: the stain's)."""
    l1, scores = [], []
    loader = DataLoader(pairs, batch_size=batch_size, shuffle=False)
    with torch.no_grad():
        for bf, target in loader:
            padded, (height, width) = pad_to_multiple(device.to(bf), multiple)
            with device.autocast():
                fake = generator(padded)[..., :height, :width]
            fake_counts = np.clip(denormalize(fake.float().cpu().numpy(), stats), 0, U16_MAX)
            real_counts = denormalize(target.numpy(), stats)
            for real, pred in zip(real_counts, fake_counts):
                l1.append(float(np.mean(np.abs(real - pred))))
                scores.append(psnr(real, pred))
    return {"val_l1": float(np.mean(l1)), "val_psnr": float(np.mean(scores))}


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


# --------------------------------------------------------------------------- the trainer


class Trainer:
    """One model's networks, optimisers, data and early-stopping state, saved in ``last.pt``."""

    def __init__(
        self,
        model: Model,
        net: NetworkConfig,
        losses: Losses,
        settings: TrainSettings,
        device: Device,
        store: Path,
        out: Path,
    ):
        self.model, self.net, self.losses, self.settings, self.device, self.store, self.out = (
            model,
            net,
            losses,
            settings,
            device,
            store,
            out,
        )
        self.generator, self.discriminator = build_networks(net, model.seed)
        self.opt_g, self.opt_d = optimizers(self.generator, self.discriminator, settings)
        self.state = {
            "epoch": 0,
            "batch": 0,
            "best_l1": math.inf,
            "best_epoch": None,
            "bad_epochs": 0,
            "history": [],
            "stop_reason": None,
        }
        self.stats = None
        self.best = None  # what best.pt holds, saved in last.pt too

    @property
    def finished(self) -> bool:
        return self.state["stop_reason"] is not None

    def start(self, record: dict, afresh: bool = False) -> str:
        """Resume from ``last.pt`` when it was trained under ``record``, else (or ``afresh``) start
        afresh. Returns ``fresh``, ``resume`` or ``finished``."""
        last, settings = self.out / "last.pt", self.out / "settings.json"
        recorded = json.loads(settings.read_text()) if settings.exists() else None
        if last.exists() and recorded != record:
            changed = sorted(k for k in record if (recorded or {}).get(k) != record[k])
            log.warning(
                "%s was trained under other settings (%s): training afresh",
                self.out,
                ", ".join(changed),
            )
        elif last.exists() and not afresh:
            self._resume(checkpoint.load(last, kind="training"), last)
            self._check_progress()
            return "finished" if self.finished else "resume"
        for path in self.out.iterdir():
            if path.name != ".lock":
                remove(path)
        write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", settings)
        self.stats = normalization_stats(self.store, "train", channels=("bf", self.model.stain))
        return "fresh"

    def _resume(self, saved: dict, path: Path) -> None:
        checkpoint.check_compatible(saved, path, self.net, self.model)
        self.generator.load_state_dict(saved["generator"])
        self.discriminator.load_state_dict(saved["discriminator"])
        self.opt_g.load_state_dict(saved["opt_g"])
        self.opt_d.load_state_dict(saved["opt_d"])
        self.state, self.stats = saved["state"], saved["stats"]
        self.best = saved.get("best")
        if not self.finished:
            log.info(
                "resuming %s at epoch %d, batch %d",
                self.model.name,
                self.state["epoch"] + 1,
                self.state["batch"],
            )

    def _check_progress(self) -> None:
        """Refuse to resume where the job before ended at its time limit without completing an epoch."""
        stalled = self.out / STALLED
        if not self.finished and stalled.exists():
            if json.loads(stalled.read_text())["epoch"] == self.state["epoch"]:
                raise VsgridError(
                    f"{self.out}: the last job reached its time limit without completing epoch "
                    f"{self.state['epoch'] + 1}; raise the train rule's runtime (profile set-resources), "
                    f"delete {stalled} and run again"
                )

    def _interrupted(self, started_epoch: int, message: str) -> Interrupted:
        """The SIGTERM after a save; records a job that completed no epoch (:data:`STALLED`)."""
        if self.state["epoch"] == started_epoch:
            write_text(json.dumps({"epoch": started_epoch}) + "\n", self.out / STALLED)
            message += "; no epoch completed in this job"
        return Interrupted(message)

    def restore_best(self) -> None:
        """Rewrite a lost ``best.pt`` from its copy in ``last.pt``: without it a finished model
        would stay finished, and rerunning would not bring back what inference loads."""
        best, last = (self.out / checkpoint.FILES[kind] for kind in ("generator", "training"))
        if self.state["best_epoch"] is None or best.exists():
            return
        if self.best is None:
            raise VsgridError(
                f"{best} is missing and {last} (written by an older vsgrid) holds no copy of it; "
                f"delete {last} and run again to train afresh"
            )
        checkpoint.save(self.best, best)
        log.warning("%s was missing: rewritten from %s (epoch %d)", best, last, self.best["epoch"])

    def fit(self, progress: bool = True) -> None:
        """Train epoch after epoch until early stopping or ``max_epochs``; SIGTERM saves and raises."""
        self._to_device()
        vgg = self._vgg()
        train_pairs, val_pairs = (
            StainPairs(
                self.store, split, self.model.stain, self.stats, preload_mb=self.settings.preload_mb
            )
            for split in ("train", "val")
        )
        started_epoch = self.state["epoch"]
        with _SigtermFlag() as sigterm:
            while not self.finished:
                started = time.perf_counter()
                try:
                    sums = self._epoch(train_pairs, vgg, sigterm, progress)
                except Interrupted as stop:
                    raise self._interrupted(started_epoch, str(stop)) from None
                metrics = validate(
                    self.generator,
                    val_pairs,
                    self.stats[self.model.stain],
                    self.device,
                    self.net.multiple,
                    self.settings.batch_size,
                )
                self._end_epoch(sums, metrics, time.perf_counter() - started)
                if sigterm.raised:
                    raise Interrupted(
                        f"{self.model.name}: SIGTERM after epoch {self.state['epoch']}; saved {self.out / 'last.pt'}"
                    )

    def _to_device(self) -> None:
        self.generator, self.discriminator = (
            self.device.prepare(self.generator),
            self.device.prepare(self.discriminator),
        )
        for optimizer in (self.opt_g, self.opt_d):  # optimiser state follows its parameters' device
            for param_state in optimizer.state.values():
                for key, value in param_state.items():
                    if torch.is_tensor(value) and key != "step":
                        param_state[key] = value.to(self.device.torch_device)

    def _vgg(self):
        if self.losses.lambda_vgg <= 0:
            return None
        if not self.losses.vgg_weights:
            raise VsgridError(
                "network.lambda_vgg > 0 needs network.vgg_weights (a local torchvision vgg19-dcbb9e9d.pth)"
            )
        return self.device.prepare(VGGLoss(load_vgg19_features(self.losses.vgg_weights)))

    def _epoch(self, train_pairs: StainPairs, vgg, sigterm: _SigtermFlag, progress: bool) -> dict:
        """The batches of the current epoch not yet done; returns the summed losses."""
        epoch, settings = self.state["epoch"], self.settings
        for optimizer in (self.opt_g, self.opt_d):
            for group in optimizer.param_groups:
                group["lr"] = settings.learning_rate(epoch)
        batches = epoch_batches(len(train_pairs), settings.batch_size, self.model.seed, epoch)
        dataset = Augmented(train_pairs, self.model.seed, epoch, settings.crop_size, settings.flips)
        options = (
            {"num_workers": settings.workers, "pin_memory": True} if self.device.is_gpu else {}
        )
        loader = DataLoader(dataset, batch_sampler=batches[self.state["batch"] :], **options)
        sums = self.state.setdefault("sums", {})
        bar = tqdm(
            loader,
            total=len(batches),
            initial=self.state["batch"],
            desc=f"{self.model.name} epoch {epoch + 1}",
            disable=not progress,
            unit="batch",
        )
        for bf, target in bar:
            losses = train_step(
                self.generator,
                self.discriminator,
                self.opt_g,
                self.opt_d,
                vgg,
                self.device.to(bf),
                self.device.to(target),
                self.net,
                self.losses,
                self.device,
            )
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value
            self.state["batch"] += 1
            bar.set_postfix(g=f"{losses['loss_g']:.3f}", d=f"{losses['loss_d']:.3f}")
            if sigterm.raised:
                self.save_last()
                raise Interrupted(
                    f"{self.model.name}: SIGTERM at epoch {epoch + 1}, batch "
                    f"{self.state['batch']}; saved {self.out / 'last.pt'}"
                )
        return {key: value / len(batches) for key, value in sums.items()}

    def _end_epoch(self, losses: dict, metrics: dict, seconds: float) -> None:
        """Log the epoch, keep the best generator, decide whether to stop, save ``last.pt``."""
        epoch, state, settings = self.state["epoch"], self.state, self.settings
        row = {
            "epoch": epoch + 1,
            "lr": settings.learning_rate(epoch),
            **losses,
            **metrics,
            "seconds": seconds,
        }
        row["best"] = improved = metrics["val_l1"] < state["best_l1"] - settings.min_delta
        if not all(math.isfinite(row[k]) for k in ("loss_g", "loss_d", "val_l1")):
            raise VsgridError(
                f"{self.model.name}: training diverged at epoch {epoch + 1} ({row}); "
                f"{self.out / 'best.pt'} keeps the last good generator"
            )
        if improved:
            state.update(best_l1=metrics["val_l1"], best_epoch=epoch + 1, bad_epochs=0)
            self.best = checkpoint.payload(
                "generator",
                self.net,
                self.model,
                self.stats,
                self.generator,
                epoch=epoch + 1,
                val=metrics,
            )
            checkpoint.save(self.best, self.out / "best.pt")
        else:
            state["bad_epochs"] += 1
        state["history"].append(row)
        state.update(epoch=epoch + 1, batch=0, sums={})
        if state["bad_epochs"] >= settings.patience:
            state["stop_reason"] = f"no better validation L1 for {settings.patience} epochs"
        elif state["epoch"] >= settings.max_epochs:
            state["stop_reason"] = f"reached max_epochs ({settings.max_epochs})"
        self.save_last()
        write_table(pd.DataFrame(state["history"]), self.out / "log.csv")
        log.info(
            "%s epoch %d: %s",
            self.model.name,
            epoch + 1,
            ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float)),
        )

    def save_last(self) -> None:
        last = checkpoint.payload(
            "training",
            self.net,
            self.model,
            self.stats,
            self.generator,
            discriminator=self.discriminator.state_dict(),
            opt_g=self.opt_g.state_dict(),
            opt_d=self.opt_d.state_dict(),
            state=self.state,
            best=self.best,
        )
        checkpoint.save(last, self.out / "last.pt")

    def summary(self) -> dict:
        return {
            "model": self.model.name,
            "epochs": len(self.state["history"]),
            "best_epoch": self.state["best_epoch"],
            "best_val_l1": self.state["best_l1"],
            "stop_reason": self.state["stop_reason"],
            "device": str(self.device),
        }


def training_record(config: dict, model: Model, store_id: str) -> dict:
    """What a model folder is trained under: resuming needs all of it unchanged."""
    record = {
        "model": model.name,
        **result_settings(config, "network", "train", "device", "data"),
        "store_id": store_id,
    }
    record["data"].pop("dir")  # where the store lies is not what it holds; store_id is
    return record


def train(config: dict, model: Model, out_dir: str | Path, progress: bool = True) -> dict:
    """Train (or resume, or find finished) one model; returns its summary.

    Raises :class:`Interrupted` after saving when SIGTERM arrives.
    """
    out = Path(out_dir)
    with folder_lock(out, "trained"):
        remove_stale_temporaries(out)
        device = Device.pick(config["device"])
        if not device.is_gpu:
            # torch.use_deterministic_algorithms(True) also sets the flag for torch.compile's
            # inductor, importing inductor and dynamo: 1.5 s of CPU in every training job, and
            # training on a CPU never compiles.
            torch._C._set_deterministic_algorithms(True)
        store = open_store(Layout.of(config).store(model.train_set))
        record = training_record(config, model, store.store_id)
        network, settings = config["network"], TrainSettings.from_config(config["train"])
        net = NetworkConfig.from_config(network)
        fields = store.images("train").shape[-2:]
        if settings.crop_size and settings.crop_size > min(fields):
            raise VsgridError(
                f"train.crop_size: {settings.crop_size} is larger than the training fields of "
                f"{store.path} ({fields[0]} x {fields[1]})"
            )
        height, width = (min(side, settings.crop_size or side) for side in fields)
        net.check_size(height, width, "training images (or train.crop_size crops)")

        def trainer() -> Trainer:
            return Trainer(
                model, net, Losses.from_config(network), settings, device, store.path, out
            )

        current = trainer()
        if current.start(record) == "finished" and not (out / "summary.json").exists():
            log.warning(
                "%s: a finished training was run again (a forced rerun): training afresh",
                model.name,
            )
            current = trainer()
            current.start(record, afresh=True)
        current.restore_best()
        if not current.finished:
            current.fit(progress)
        summary = current.summary()
        write_text(json.dumps(summary, indent=2) + "\n", out / "summary.json")
    log.info("%s: %s", model.name, summary["stop_reason"])
    return summary
