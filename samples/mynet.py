"""A user-style network for trying `attnviz --model samples/mynet.py:build`: a small ResNet-like classifier with its
own squeeze-excitation and spatial gates, written the way research code writes them (attnviz knows none of these
classes; it finds the gates by what they compute)."""

from __future__ import annotations

import torch
from torch import nn


class ChannelGate(nn.Module):
    """Squeeze-excitation: a sigmoid weight per channel from the globally pooled features."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x)


class PixelGate(nn.Module):
    """CBAM's spatial half: a sigmoid weight per pixel from the channel mean and max."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)
        self.act = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * self.act(self.conv(pooled))


class Stage(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
        )
        self.channel_gate = ChannelGate(cout)
        self.pixel_gate = PixelGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pixel_gate(self.channel_gate(self.conv(x)))


class MyNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        widths = [width, width * 2, width * 4, width * 8, width * 8]
        self.stages = nn.Sequential(*(Stage(widths[i], widths[i + 1]) for i in range(4)))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def build(num_classes: int = 10, width: int = 32) -> MyNet:
    """The factory `--model samples/mynet.py:build,num_classes=5` calls."""
    torch.manual_seed(0)
    return MyNet(num_classes, width)
