"""Model registry: name → entry with its constructor. Every model takes [N, 1, 28, 28] in [0, 1] and
returns logits."""

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from suite.data import NUM_CLASSES
from suite.distill.convnet import ConvNet


class CWMnist(nn.Module):
    """The MNIST network of Carlini & Wagner 2017 / Papernot et al. 2016.

    conv32-conv32-pool-conv64-conv64-pool-fc200-fc200-fc10, ReLU, dropout before the fc layers.
    """

    def __init__(self, dropout: float = 0.5, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 200),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(200, 200),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(200, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Tiny(nn.Module):
    """A small conv net for tests: trains to >90% on mnist-5k in seconds on a CPU."""

    def __init__(self, dropout: float = 0.0, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 5, stride=2),
            nn.ReLU(),
            nn.Conv2d(8, 16, 5, stride=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(16 * 4 * 4, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLP(nn.Module):
    """784-100-100-10 with ReLUs: small enough for exact minimal distortions (issue 30)."""

    def __init__(self, dropout: float = 0.0, num_classes: int = 10, width: int = 100) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class StandardisedConvNet(nn.Module):
    """The ConvNet of dataset distillation (DC, DSA, DM: width 128, depth 3, instance norm) as a
    model under attack: the papers' setting, where the distilled set trains the net it was
    distilled with. Inputs in [0, 1] are standardised with MNIST's mean and std inside the model,
    as the papers feed it, so attacks still work in pixel space.
    """

    MEAN, STD = 0.1307, 0.3081

    def __init__(self, dropout: float = 0.0, num_classes: int = 10) -> None:
        super().__init__()
        self.net = ConvNet(num_classes=num_classes, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.MEAN) / self.STD)


class ModelBuilder(Protocol):
    """The one signature every architecture is built with."""

    def __call__(self, *, dropout: float, num_classes: int) -> nn.Module: ...


@dataclass(frozen=True)
class ModelKind:
    """One architecture of the registry: the manifest's `model.arch` and how to build it. It has no
    settings model: its one setting, dropout, comes from the training settings (`train.dropout`,
    or a synthetic set's recipe)."""

    name: str
    build: ModelBuilder


MODELS: dict[str, ModelKind] = {
    k.name: k
    for k in (
        ModelKind(name="convnet", build=StandardisedConvNet),
        ModelKind(name="cw-mnist", build=CWMnist),
        ModelKind(name="mlp", build=MLP),
        ModelKind(name="tiny", build=Tiny),
    )
}


def model_kind(arch: str) -> ModelKind:
    """The registry entry of `arch`; a KeyError that lists the known architectures for any other."""
    if arch not in MODELS:
        raise KeyError(f"unknown model arch {arch!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[arch]


def build_model(arch: str, dropout: float = 0.5) -> nn.Module:
    """Construct a fresh model by registry name (weights from the current torch RNG state)."""
    return model_kind(arch).build(dropout=dropout, num_classes=NUM_CLASSES)
