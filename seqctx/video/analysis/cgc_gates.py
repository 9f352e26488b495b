"""CGC gates: per CGC layer, the distribution of the gate's values, their spread across samples
(how much the kernel depends on the input: the std over videos of each gate entry, averaged), and
for video layers the spread across the time slices of the temporal gate (sec. 3.3); and a 2-D PCA
of the per-video gate logits of the last CGC layer, coloured by class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seqctx.modules.cgc import ContextGatedConv1d, ContextGatedConv2d, ContextGatedConv3d
from seqctx.modules.gated_conv import gate_from_logits

from .passes import Batch, Hook, Rerun, layer_names

NAME = "cgc_gates"
NEEDS_CLASSES = False
BINS = torch.linspace(0, 1, 51)
CGC = (ContextGatedConv1d, ContextGatedConv2d, ContextGatedConv3d)


def gated_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in layer_names(model, CGC) if m.gated]


def applies(model: nn.Module) -> str | None:
    return None if gated_layers(model) else "the model has no CGC layer"


def hooks(model: nn.Module, batch: Batch, state: dict[str, Any]) -> list[tuple[nn.Module, Hook]]:
    """Per layer: a histogram of gate values, per-entry sums and squares over videos, the time
    slices' spread; for the last layer, each video's logits and label (for the PCA)."""
    layers = gated_layers(model)
    out = []
    for i, (_, layer) in enumerate(layers):
        last = i == len(layers) - 1

        def hook(m: nn.Module, args: tuple[Tensor, ...], _y: Tensor, key: str = f"{i}", last: bool = last) -> None:
            g1, g2 = m.context_gate.logits(m._pool_context(args[0]))  # (N, C, t*k), (N, O, t*k)
            n, t = g1.shape[0], m.time_slices
            gate = gate_from_logits(g1, g2, m.groups).double().view(n, *m.weight.shape[:2], t, -1)  # (N, O, C/g, t, K)
            flat = gate.reshape(n, -1)
            hist = torch.histogram(flat.cpu().clamp(0, 1), BINS.double()).hist
            spread_t = gate.std(3, unbiased=False).mean().item() * n if t > 1 else 0.0
            acc = {"hist": hist, "sum": flat.sum(0).cpu(), "sq": flat.square().sum(0).cpu(),
                   "n": torch.tensor(float(n), dtype=torch.float64), "time": torch.tensor(spread_t)}  # fmt: skip
            for name, value in acc.items():
                state[f"{key}.{name}"] = state.get(f"{key}.{name}", 0) + value
            if last:  # lists: the processes' parts are concatenated, not summed
                state.setdefault("codes", []).append(torch.cat([g1.flatten(1), g2.flatten(1)], 1).double().cpu())
                state.setdefault("labels", []).append(batch.labels.cpu())

        out.append((layer, hook))
    return out


def numbers(model: nn.Module, state: dict[str, Any], rerun: Rerun) -> dict[str, Any]:
    layers = []
    for i, (name, layer) in enumerate(gated_layers(model)):
        n = state[f"{i}.n"]
        mean = state[f"{i}.sum"] / n
        std = (state[f"{i}.sq"] / n - mean.square()).clamp(min=0).sqrt()
        hist = state[f"{i}.hist"]
        layers.append({"layer": name, "time_slices": layer.time_slices, "mean": mean.mean().item(),
                       "std_across_videos": std.mean().item(),
                       "std_across_time_slices": (state[f"{i}.time"] / n).item() if layer.time_slices > 1 else None,
                       "density": (hist / hist.sum()).tolist()})  # fmt: skip
    codes, labels = torch.cat(state["codes"]), torch.cat(state["labels"])
    centred = codes - codes.mean(0)
    k = min(2, *centred.shape)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    xy = centred @ v[:k].T
    return {"layers": layers, "bins": BINS.tolist(), "pca_layer": gated_layers(model)[-1][0],
            "pca": [{"x": p[0].item(), "y": p[1].item() if k > 1 else 0.0, "label": int(c)}
                    for p, c in zip(xy, labels, strict=True)]}  # fmt: skip


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    label, r = next(iter(results.items()))
    layers = r["layers"]
    fig = Figure(figsize=(16, 4))
    a, b, c = fig.subplots(1, 3)
    dens = torch.tensor([x["density"] for x in layers])
    extent = (-0.5, len(layers) - 0.5, 0, 1)
    a.imshow(torch.log1p(dens * 100).T.numpy(), aspect="auto", origin="lower", cmap="viridis", extent=extent)
    a.set(xlabel="CGC layer (network order)", ylabel="gate value", title="gate values, log(1 + density)")
    idx = range(len(layers))
    b.plot(idx, [x["std_across_videos"] for x in layers], marker="o", ms=3, label="across videos")
    if any(x["std_across_time_slices"] is not None for x in layers):
        b.plot(idx, [x["std_across_time_slices"] or 0.0 for x in layers], marker="s", ms=3, label="across time slices")
    b.set(xlabel="CGC layer", ylabel="std of the gate (mean over entries)", title="how input-dependent the kernel is")
    b.legend(fontsize=8)
    pts = r["pca"]
    sc = c.scatter([p["x"] for p in pts], [p["y"] for p in pts], c=[p["label"] for p in pts], cmap="tab10", s=14)
    fig.colorbar(sc, ax=c, label="class")
    c.set(
        xlabel="PC 1", ylabel="PC 2", title=f"gate logits per video, {r['pca_layer'].removeprefix('trunk.')} ({label})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def summary(results: dict[str, dict[str, Any]]) -> str:
    label, r = next(iter(results.items()))
    layers = r["layers"]
    spread = sum(x["std_across_videos"] for x in layers) / len(layers)
    line = f"{label}: {len(layers)} CGC layers; gate mean {sum(x['mean'] for x in layers) / len(layers):.3f}, "
    line += f"std across videos {spread:.4f} (mean over layers)"
    times = [x["std_across_time_slices"] for x in layers if x["std_across_time_slices"] is not None]
    if times:
        line += f", across time slices {sum(times) / len(times):.4f}"
    return line
