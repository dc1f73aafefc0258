"""OpenPose body model (Cao et al. 2017): VGG-19 base + six two-branch refinement stages.

Base: VGG-19's first ten convs (through conv4_2, stride 8) and two convs down to 128
channels. Stage 1: per branch three 3x3 convs, a 1x1 to 512, a 1x1 to the branch output.
Stages 2-6 take base features + both previous outputs (128 + 38 + 19 = 185 channels):
per branch five 7x7 convs, a 1x1, a 1x1 out. Outputs: 38 part-affinity-field channels
and 19 heatmap channels at 1/8 resolution (368x368 -> 46x46).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from inferpack.workloads.vgg import conv_stack

PAF_CHANNELS = 38
HEATMAP_CHANNELS = 19
BASE_LAYOUT: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512)


def _branch(cin: int, cout: int, kernel: int, convs: int, hidden: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = cin
    for _ in range(convs):
        layers += [nn.Conv2d(channels, 128, kernel, padding=kernel // 2), nn.ReLU(inplace=True)]
        channels = 128
    layers += [nn.Conv2d(128, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, cout, 1)]
    return nn.Sequential(*layers)


class _Stage(nn.Module):
    def __init__(self, cin: int, kernel: int, convs: int, hidden: int) -> None:
        super().__init__()
        self.paf = _branch(cin, PAF_CHANNELS, kernel, convs, hidden)
        self.heatmap = _branch(cin, HEATMAP_CHANNELS, kernel, convs, hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.paf(x), self.heatmap(x)


class OpenPoseBody(nn.Module):
    """Top-level stages (base, stage1..stage6) are attributes so a profiler can time them."""

    def __init__(self) -> None:
        super().__init__()
        self.base = nn.Sequential(
            conv_stack(BASE_LAYOUT),
            nn.Conv2d(512, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 128, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        refine = 128 + PAF_CHANNELS + HEATMAP_CHANNELS
        self.stage1 = _Stage(128, kernel=3, convs=3, hidden=512)
        self.stage2 = _Stage(refine, kernel=7, convs=5, hidden=128)
        self.stage3 = _Stage(refine, kernel=7, convs=5, hidden=128)
        self.stage4 = _Stage(refine, kernel=7, convs=5, hidden=128)
        self.stage5 = _Stage(refine, kernel=7, convs=5, hidden=128)
        self.stage6 = _Stage(refine, kernel=7, convs=5, hidden=128)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.base(x)
        paf, heatmap = self.stage1(features)
        for stage in (self.stage2, self.stage3, self.stage4, self.stage5, self.stage6):
            paf, heatmap = stage(torch.cat([features, paf, heatmap], 1))
        return paf, heatmap


def openpose_body(options: Mapping[str, Any]) -> nn.Module:
    return OpenPoseBody()
