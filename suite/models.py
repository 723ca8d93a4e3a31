"""Model registry: name → constructor. Every model takes [N, 1, 28, 28] in [0, 1] and returns logits."""

from collections.abc import Callable

import torch
from torch import nn

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


MODELS: dict[str, Callable[..., nn.Module]] = {
    "convnet": StandardisedConvNet,
    "cw-mnist": CWMnist,
    "tiny": Tiny,
}


def build_model(arch: str, dropout: float = 0.5) -> nn.Module:
    """Construct a fresh model by registry name (weights from the current torch RNG state)."""
    if arch not in MODELS:
        raise KeyError(f"unknown model arch {arch!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[arch](dropout=dropout)
