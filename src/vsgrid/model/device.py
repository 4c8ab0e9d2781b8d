"""Where the networks run, and how: the ``device`` section of the config.

On a GPU: bf16 autocast, channels_last and cuDNN benchmark, each switchable. On a CPU: fp32, and
training is deterministic (the same seed gives the same weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Device:
    torch_device: torch.device
    bf16: bool
    channels_last: bool

    @classmethod
    def pick(cls, settings: dict | None = None) -> Device:
        """The GPU if there is one, with the ``device`` section's settings; else the CPU."""
        settings = settings or {}
        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = settings.get("cudnn_benchmark", True)
            return cls(
                torch.device("cuda"),
                settings.get("bf16", True),
                settings.get("channels_last", True),
            )
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

    def __str__(self) -> str:
        return str(self.torch_device)
