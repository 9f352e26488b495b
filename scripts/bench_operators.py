"""Forward+backward time and memory of each context operator, side by side with the plain block.

Shapes are the 3x3 convolutions of ResNet-50's four stages (2D, batch 32) and of a TSM model
(8 segments: 4 videos x 8 frames). For each shape it times, in one interleaved run:

* ``conv`` (the plain 3x3 convolution) and ``cgc`` (its context-gated twin): CGC / conv; beside
  them two other formulations of the same layer on the same weights: ``cgc_materialised`` (the
  gated kernels ``W * G`` formed by autograd and kept for backward: seqctx before the
  recomputing autograd function) and ``cgc_unfold`` (unfold + batched matmul per sample, the
  official code's formulation, written here); image shapes only;
* ``block`` = conv + BN + ReLU, and the block with each operator where the papers put it:
  GCT before the conv, SE / GE-theta-minus after BN, CE between BN and ReLU, CGC as the conv.

Usage: ``python scripts/bench_operators.py [--small] [--device cuda] [--out bench_results/operators.json]``
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from benchlib import device_info, peak_memory_bytes, print_table, time_interleaved, write_json
from torch import nn

from seqctx.modules import ContextGatedConv2d, create_context

STAGES = [(64, 56), (128, 28), (256, 14), (512, 7)]


class MaterialisedCGC(nn.Module):
    """``layer``'s function with the gated kernels ``(N, O, C, k, k)`` formed by autograd: the
    gate and the gated kernels are both kept for backward."""

    def __init__(self, layer: ContextGatedConv2d) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, n = self.layer, x.shape[0]
        weight = (m.weight * m.gate(x)).flatten(0, 1)  # (N*O, C, k, k)
        y = F.conv2d(x.reshape(1, -1, *x.shape[2:]), weight, None, m.stride, m.padding, m.dilation, n * m.groups)
        return y.view(n, m.out_channels, *y.shape[2:])


class UnfoldCGC(MaterialisedCGC):
    """``layer``'s function as unfold + batched matmul per sample (groups = 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, n = self.layer, x.shape[0]
        cols = F.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)  # (N, C*k*k, L)
        weight = (m.weight * m.gate(x)).flatten(2)  # (N, O, C*k*k)
        geometry = zip(x.shape[2:], m.padding, m.dilation, m.kernel_size, m.stride, strict=True)
        size = [(s + 2 * p - d * (k - 1) - 1) // st + 1 for s, p, d, k, st in geometry]
        return torch.bmm(weight, cols).view(n, m.out_channels, *size)


def build_variants(channels: int, num_segments: int | None) -> dict[str, nn.Module]:
    def conv() -> nn.Conv2d:
        return nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def cgc() -> ContextGatedConv2d:
        return ContextGatedConv2d(channels, channels, 3, padding=1, bias=False, num_segments=num_segments)

    def block(first: nn.Module | None = None, conv_layer: nn.Module | None = None, after_bn: nn.Module | None = None):
        layers = [first] if first is not None else []
        layers += [conv_layer or conv(), nn.BatchNorm2d(channels)]
        layers += [after_bn] if after_bn is not None else []
        return nn.Sequential(*layers, nn.ReLU(inplace=True))

    cgc_layer = cgc()
    formulations = {} if num_segments else {"cgc_materialised": MaterialisedCGC(cgc_layer),
                                            "cgc_unfold": UnfoldCGC(cgc_layer)}  # fmt: skip
    return {
        "conv": conv(),
        "cgc": cgc_layer,
        **formulations,
        "block": block(),
        "block+gct": block(first=create_context("gct", channels)),
        "block+se": block(after_bn=create_context("se", channels)),
        "block+ge": block(after_bn=create_context("ge", channels)),
        "block+ce": block(after_bn=create_context("ce", channels)),
        "block+cgc": block(conv_layer=cgc()),
    }


def step_fn(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).sum().backward()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="batch 8 and two stages: a quick run")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="bench_results/operators.json")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    batch, videos, stages = (8, 1, STAGES[1:3]) if args.small else (32, 4, STAGES)
    shapes = [(f"r50 {c}x{s}x{s} N={batch}", c, s, batch, None) for c, s in stages]
    shapes += [(f"tsm {c}x{s}x{s} N={videos}x8", c, s, videos * 8, 8) for c, s in stages[1:3]]
    rows: list[dict[str, object]] = []
    for label, c, s, n, segments in shapes:
        variants = {k: m.to(device) for k, m in build_variants(c, segments).items()}
        x = torch.randn(n, c, s, s, device=device, requires_grad=True)
        steps = {k: step_fn(m, x) for k, m in variants.items()}
        times = time_interleaved(steps, device, args.rounds)
        mems = {k: peak_memory_bytes(fn, device) for k, fn in steps.items()}
        for k in variants:
            ref = "conv" if k == "conv" or k.startswith("cgc") else "block"
            rows.append(
                {
                    "shape": label,
                    "variant": k,
                    "ms": times[k] * 1e3,
                    "time_ratio": times[k] / times[ref],
                    "ratio_to": ref,
                    "mem_MB": mems[k] / 2**20,
                    "mem_ratio": mems[k] / mems[ref],
                }
            )
        print(f"done {label}", flush=True)
    print_table(rows, ["shape", "variant", "ms", "time_ratio", "ratio_to", "mem_MB", "mem_ratio"])
    write_json(args.out, {"info": device_info(device), "small": args.small, "rows": rows})


if __name__ == "__main__":
    main()
