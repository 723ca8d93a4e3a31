"""Model registry: name → entry with its constructor. Every model takes [N, 1, 28, 28] in [0, 1] and
returns logits. The ConvNet that dataset distillation distils with lives here too, so that
`suite.distill` depends on the registry and not the other way round."""

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from suite.data import NUM_CLASSES


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
    """784-100-100-10 with ReLUs: small enough for certified bounds on every digit (issue 30)."""

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


class SmallMLP(MLP):
    """784-20-20-10: Tjeng et al. 2019's (and Katz et al.'s Reluplex) MLP-2×[20], small enough
    for exact minimal L∞ distortions of naturally trained models (issue 30)."""

    def __init__(self, dropout: float = 0.0, num_classes: int = 10) -> None:
        super().__init__(dropout=dropout, num_classes=num_classes, width=20)


class ConvNet(nn.Module):
    """`depth` blocks of conv3×3 (`width` channels) – instance norm – ReLU – avg-pool 2, then a
    linear classifier. Input [N, 1, 28, 28]; the first conv pads by 3 (28 → 32) as the papers' code
    does for one-channel images, so depth 3 ends on 4×4 maps. Instance norm is GroupNorm(C, C).
    `dropout` (before the classifier) is 0 in the papers; it exists so a manifest's `train.dropout`
    means the same for this net as for the others when it is the model under attack.
    """

    def __init__(
        self, width: int = 128, depth: int = 3, num_classes: int = 10, dropout: float = 0.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = 1, 32
        for d in range(depth):
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, padding=3 if d == 0 else 1),
                nn.GroupNorm(width, width, affine=True),
                nn.ReLU(),
                nn.AvgPool2d(2),
            ]
            channels, size = width, size // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(width * size * size, num_classes)
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened features before the classifier (DM matches their class means)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


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
        ModelKind(name="mlp-small", build=SmallMLP),
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
