"""Small workloads: a tiny MLP, two CNNs, SqueezeNet 1.1 and a sleeping identity."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def tiny_mlp(options: Mapping[str, Any]) -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def _conv_classifier(widths: tuple[int, ...], classes: int) -> nn.Module:
    """3x3 conv + batch norm + ReLU + 2x2 max pool per width, then global average pool and
    one linear layer: input 3 x H x W (H, W divisible by 2 ** len(widths))."""
    layers: list[nn.Module] = []
    for cin, cout in itertools.pairwise((3, *widths)):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
        layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], classes)]
    return nn.Sequential(*layers)


def small_cnn(options: Mapping[str, Any]) -> nn.Module:
    return _conv_classifier((16, 32, 64), 10)


def medium_cnn(options: Mapping[str, Any]) -> nn.Module:
    """482,596 parameters and 1,093 buffer values (1.85 MiB in fp32): the model of the
    many-models memory benchmark, small enough that per-model overhead shows beside it."""
    return _conv_classifier((32, 64, 128, 128, 192), 100)


class _Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU(inplace=True))
        self.expand1x1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU(inplace=True))
        self.expand3x3 = nn.Sequential(
            nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(x)
        return torch.cat([self.expand1x1(x), self.expand3x3(x)], 1)


def squeezenet(options: Mapping[str, Any]) -> nn.Module:
    pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
    features = nn.Sequential(
        nn.Conv2d(3, 64, 3, stride=2),
        nn.ReLU(inplace=True),
        pool,
        _Fire(64, 16, 64),
        _Fire(128, 16, 64),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        _Fire(128, 32, 128),
        _Fire(256, 32, 128),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        _Fire(256, 48, 192),
        _Fire(384, 48, 192),
        _Fire(384, 64, 256),
        _Fire(512, 64, 256),
    )
    classifier = nn.Sequential(
        nn.Dropout(0.5),
        nn.Conv2d(512, 1000, 1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return nn.Sequential(features, classifier)


class _Sleep(nn.Module):
    """Identity that holds its thread for a fixed time per batch: a known-answer model
    for load generators and admission control (like Triton's delay models)."""

    def __init__(self, sleep_ms: float) -> None:
        super().__init__()
        self.sleep_s = sleep_ms / 1000.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.sleep_s)
        return x.clone()


def sleep(options: Mapping[str, Any]) -> nn.Module:
    return _Sleep(float(options.get("sleep_ms", 20.0)))
