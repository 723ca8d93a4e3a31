"""The ConvNet that DC, DSA and DM distil with and evaluate on (Zhao et al. 2021; Zhao & Bilen)."""

import torch
from torch import nn


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
