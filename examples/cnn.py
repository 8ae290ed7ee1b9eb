"""
CNN: a small residual convolutional image classifier.

A ResNet-style network after "Deep Residual Learning for Image Recognition" (He
et al., 2016, arXiv:1512.03385), kept tiny: a 3x3 conv stem with BatchNorm, one
stride-2 downsampling conv with GroupNorm ("Group Normalization", Wu & He, 2018)
that doubles the channel count, one residual block of two 3x3 convs (plain
convolutions, no depthwise ones), global average pooling and a linear
classifier. Width here is the channel count.

Width notation used in the shape comments below:
    B  batch            C_in  in_channels (fixed)     K  num_classes (fixed)
    W  width            S  image_size (fixed)
Axes marked "grows with width" scale with width; spatial sizes stay fixed.
"""

import math

import torch
from torch import nn


def num_groups_for(channels: int, preferred: int = 8) -> int:
    """GroupNorm group count: `preferred` when it divides channels, else their greatest common divisor."""
    return math.gcd(preferred, channels)


class ResidualBlock(nn.Module):
    """x + GN(conv(ReLU(GN(conv(x))))), followed by ReLU; channel count is unchanged."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(num_groups_for(channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(num_groups_for(channels), channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm1(self.conv1(x)))  # (B, 2W, S/2, S/2)
        h = self.norm2(self.conv2(h))  # (B, 2W, S/2, S/2)
        return self.act(x + h)


class CNN(nn.Module):
    """Image (B, C_in, S, S) -> class logits (B, num_classes)."""

    def __init__(self, in_channels: int = 3, width: int = 32, num_classes: int = 10, image_size: int = 16) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.width = width
        self.num_classes = num_classes
        self.image_size = image_size

        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.down = nn.Sequential(
            nn.Conv2d(width, 2 * width, kernel_size=3, stride=2, padding=1, bias=False),
            nn.GroupNorm(num_groups_for(2 * width), 2 * width),
            nn.ReLU(),
        )
        self.block = ResidualBlock(2 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, image_size, image_size) -> logits (B, num_classes)."""
        x = self.stem(x)  # (B, W, S, S); W grows with width
        x = self.down(x)  # (B, 2W, S/2, S/2); 2W grows with width
        x = self.block(x)  # (B, 2W, S/2, S/2)
        x = self.pool(x)  # (B, 2W, 1, 1)
        x = x.flatten(1)  # (B, 2W); 2W grows with width
        return self.fc(x)  # (B, K); fixed size, not width

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        device = next(self.parameters()).device
        return (torch.randn(batch_size, self.in_channels, self.image_size, self.image_size, device=device),)
