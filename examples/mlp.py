"""
MLP: a plain fully connected ReLU network.

The simplest width-scalable model, and the running example of "Tensor Programs
V: Tuning Large Neural Networks via Zero-Shot Hyperparameter Transfer" (Yang
et al., 2022, arXiv:2203.03466): an input layer maps the fixed input features to
the hidden width, depth - 2 hidden layers keep that width, and an output layer
maps back to a fixed number of outputs.

Width notation:
    B  batch            F_in  in_features (fixed)     F_out  out_features (fixed)
    W  width (grows with width)
There are no reshapes; every hidden activation is (B, W).
"""

import torch
from torch import nn


class MLP(nn.Module):
    """Linear(F_in, W) -> ReLU -> (depth - 2) x [Linear(W, W) -> ReLU] -> Linear(W, F_out)."""

    def __init__(self, in_features: int = 64, width: int = 128, depth: int = 3, out_features: int = 10) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth counts the Linear layers and must be at least 2, got {depth}")
        self.in_features = in_features
        self.width = width
        self.depth = depth
        self.out_features = out_features

        self.input_layer = nn.Linear(in_features, width)  # input weights: fixed fan-in, width fan-out
        self.hidden_layers = nn.ModuleList([nn.Linear(width, width) for _ in range(depth - 2)])  # hidden weights
        self.output_layer = nn.Linear(width, out_features)  # output weights: width fan-in, fixed fan-out
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_features) -> (B, out_features)."""
        h = self.act(self.input_layer(x))  # (B, W)
        for layer in self.hidden_layers:
            h = self.act(layer(h))  # (B, W)
        return self.output_layer(h)  # (B, F_out)

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        device = next(self.parameters()).device
        return (torch.randn(batch_size, self.in_features, device=device),)
