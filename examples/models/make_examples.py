"""Regenerate the small example models shipped in this folder (seeded; run from the repo root).

    python examples/models/make_examples.py

tiny_cnn.onnx: a residual CNN small enough to ship in the repository (the README's first command
compiles it). The full ResNet-18 / MobileNetV3-Small / BERT architectures are in architectures.py and
are built in code by the tests and benchmarks (their weights are too large to ship).
"""

from __future__ import annotations

import os

import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(16, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, 1, 1)
        )
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        x = self.pool(x).mean(dim=(2, 3))
        return self.head(x)


def main() -> None:
    torch.manual_seed(0)
    m = TinyCNN().eval()
    here = os.path.dirname(os.path.abspath(__file__))
    torch.onnx.export(
        m,
        (torch.randn(1, 3, 32, 32),),
        os.path.join(here, "tiny_cnn.onnx"),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )


if __name__ == "__main__":
    main()
