"""Classification heads."""

from __future__ import annotations

from torch import Tensor, nn


class ClassificationHead(nn.Module):
    """Global average pool over all of ``(B, C, *S)``, dropout, fc: ``-> (B, num_classes)``."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)
        nn.init.normal_(self.fc.weight, std=0.001)  # the TSN/TSM head initialisation
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: Tensor) -> Tensor:
        pooled = features.mean(tuple(range(2, features.dim())))  # (B, C)
        return self.fc(self.dropout(pooled))
