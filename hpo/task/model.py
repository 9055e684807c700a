"""The denoiser: two stacked LSTMs and a Linear head, with a look-ahead shift.

The input is padded with `shift` zeros at the end; LSTM 1 runs over it and its first `shift`
outputs are dropped, so the output at step t has seen inputs up to t + shift. LSTM 2 and the
Linear layer then map back to one value per step: output shape equals input shape.
"""

from __future__ import annotations

import torch
from torch import nn


class Denoiser(nn.Module):
    def __init__(self, hidden_size: int = 40, shift: int = 10) -> None:
        super().__init__()
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
        if shift < 0:
            raise ValueError(f"shift must be >= 0, got {shift}")
        self.hidden_size = hidden_size
        self.shift = shift
        self.lstm1 = nn.LSTM(1, hidden_size, batch_first=True)
        self.lstm2 = nn.LSTM(hidden_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, length, 1) -> (batch, length, 1)."""
        if self.shift:
            x = nn.functional.pad(x, (0, 0, 0, self.shift))
        h, _ = self.lstm1(x)
        h, _ = self.lstm2(h[:, self.shift :])
        return self.head(h)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
