"""Temporal Segment Network wrapper and the two-stream late fusion."""

import torch
from torch import nn


class TSN(nn.Module):
    """Runs a 2D backbone on each of K snippets and averages their class scores (average consensus).

    Input (N, K, C, H, W); output (N, num_classes). K is read from the input, so a model trained with
    K = 3 segments can be evaluated on more; `segments` is the K that training and sampling use.
    """

    def __init__(self, backbone: nn.Module, segments: int = 3) -> None:
        super().__init__()
        self.backbone = backbone
        self.segments = segments

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = x.shape[1]
        scores = self.backbone(x.flatten(0, 1))
        return scores.view(-1, k, scores.shape[-1]).mean(dim=1)


class TwoStream(nn.Module):
    """Late fusion of an RGB and an optical-flow model: w_rgb * s_rgb + w_flow * s_flow.

    Scores are the models' logits (TSN fuses class scores before softmax; default weights 1 : 1.5 as TSN).
    Inputs: the RGB model's input and the flow model's input; output (N, num_classes).
    """

    def __init__(self, rgb: nn.Module, flow: nn.Module, weights: tuple[float, float] = (1.0, 1.5)) -> None:
        super().__init__()
        self.rgb = rgb
        self.flow = flow
        self.weights = (float(weights[0]), float(weights[1]))

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        return self.weights[0] * self.rgb(rgb) + self.weights[1] * self.flow(flow)
