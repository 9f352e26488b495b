"""Model surgery: put context operators into any ``nn.Module`` (torchvision, timm, your own).

Both helpers change the model in place and return a :class:`SurgeryReport`, whose ``undo()``
takes the change back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from .cgc import ContextGatedConv1d, ContextGatedConv2d, ContextGatedConv3d, _ContextGatedConvNd
from .factory import create_context
from .tables import CHANNEL_NORMS, CONV_BY_DIMS

__all__ = ["SurgeryReport", "convert_to_cgc", "insert_context"]

_PLAIN_TO_CGC: dict[type[nn.Module], type[_ContextGatedConvNd]] = {
    CONV_BY_DIMS[cgc._spatial_dims]: cgc for cgc in (ContextGatedConv1d, ContextGatedConv2d, ContextGatedConv3d)
}


@dataclass
class SurgeryReport:
    """What a surgery changed: ``changed`` lists ``"module.name: what"`` lines, ``skipped`` the
    modules it left alone and why; :meth:`undo` restores the model (hooks removed, operators
    detached, replaced convolutions put back)."""

    changed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    added_parameters: int = 0
    _undo: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.changed)

    def __str__(self) -> str:
        lines = [f"{len(self.changed)} modules changed, {self.added_parameters:,} parameters added"]
        lines += [f"  {c}" for c in self.changed]
        return "\n".join(lines + [f"  skipped {s}" for s in self.skipped])

    def undo(self) -> None:
        """Take the surgery back, last change first (once)."""
        while self._undo:
            self._undo.pop()()


def _apply_context_before(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return (module.context(args[0]), *args[1:])


def _apply_context_after(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> Tensor:
    return module.context(output)


def _num_params(module: nn.Module) -> int:
    """Parameters counted so far: a lazy one (sized at the first forward) counts as 0."""
    return sum(p.numel() for p in module.parameters() if not is_lazy(p))


def insert_context(
    model: nn.Module,
    name: str,
    position: str = "before_conv",
    include: Callable[[str, nn.Module], bool] | None = None,
    **kwargs: object,
) -> SurgeryReport:
    """Attach the operator ``name`` (see :func:`~seqctx.modules.factory.create_context`) to every
    convolution (``position="before_conv"``, GCT's placement: the operator transforms the
    convolution's input) or every normaliser (``"after_norm"``, CE's placement: it transforms
    the normaliser's output).

    The operator becomes the child ``context`` of the convolution/normaliser and runs from a
    forward (pre-)hook, so the existing parameter names, and so pretrained checkpoints, stay valid.
    ``include(qualified_name, module)`` can restrict which modules are touched.
    """
    if position not in ("before_conv", "after_norm"):
        raise ValueError(f"position must be 'before_conv' or 'after_norm', got {position!r}")
    report = SurgeryReport()
    for qual, module in list(model.named_modules()):
        if include is not None and not include(qual, module):
            continue
        if hasattr(module, "context"):
            if isinstance(module, (nn.modules.conv._ConvNd, *CHANNEL_NORMS)):
                report.skipped.append(f"{qual}: it already has a context ({type(module.context).__name__})")
            continue
        if position == "before_conv" and isinstance(module, nn.modules.conv._ConvNd):
            if module.transposed:
                continue
            channels, dims = module.in_channels, len(module.kernel_size)
        elif position == "after_norm" and isinstance(module, CHANNEL_NORMS):
            channels = module.num_channels if isinstance(module, nn.GroupNorm) else module.num_features
            dims = {nn.BatchNorm1d: 1, nn.BatchNorm3d: 3, nn.InstanceNorm1d: 1, nn.InstanceNorm3d: 3}.get(
                type(module), 2
            )
        else:
            continue
        op = create_context(name, channels, dims, **kwargs)
        ref = next(module.parameters(), None)
        if ref is not None:
            op = op.to(device=ref.device, dtype=ref.dtype)
        module.add_module("context", op)
        if position == "before_conv":
            handle = module.register_forward_pre_hook(_apply_context_before)
        else:
            handle = module.register_forward_hook(_apply_context_after)
        report._undo.append(lambda m=module, h=handle: (h.remove(), delattr(m, "context")))
        report.changed.append(f"{qual}: {position.replace('_', ' ')} += {type(op).__name__}({channels})")
        report.added_parameters += _num_params(op)
    return report


def convert_to_cgc(
    model: nn.Module,
    min_kernel: int = 2,
    include: Callable[[str, nn.Module], bool] | None = None,
    **kwargs: object,
) -> SurgeryReport:
    """Replace every ``nn.Conv{1,2,3}d`` whose largest kernel side is at least ``min_kernel`` by
    its context-gated twin (``ContextGatedConvNd.from_conv``), keeping weight and bias.

    ``kwargs`` go to the CGC constructor (``num_segments`` for TSN/TSM frame models,
    ``context_size``). ``include(qualified_name, conv)`` can restrict which convolutions change.
    An operator that :func:`insert_context` attached to a convolution moves to its CGC twin, so
    the two surgeries compose in either order.
    """
    report = SurgeryReport()
    for qual, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            cgc_type = _PLAIN_TO_CGC.get(type(child))
            if cgc_type is None or max(child.kernel_size) < min_kernel:
                continue
            full = f"{qual}.{child_name}" if qual else child_name
            if include is not None and not include(full, child):
                continue
            new = cgc_type.from_conv(child, **kwargs)
            if isinstance(getattr(child, "context", None), nn.Module):  # attached by insert_context
                new.add_module("context", child.context)
                new.register_forward_pre_hook(_apply_context_before)
            setattr(parent, child_name, new)
            report._undo.append(lambda p=parent, n=child_name, c=child: setattr(p, n, c))
            report.changed.append(f"{full}: {type(child).__name__} -> {cgc_type.__name__}")
            report.added_parameters += _num_params(new) - _num_params(child)
    return report
