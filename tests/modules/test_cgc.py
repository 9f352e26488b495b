import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seqctx.modules import ContextGatedConv1d, ContextGatedConv2d, ContextGatedConv3d
from tests.conftest import DTYPE_TOL, spatial_shape

CGC = {1: ContextGatedConv1d, 2: ContextGatedConv2d, 3: ContextGatedConv3d}
PLAIN = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

# (kernel, stride, padding, dilation, groups, bias, padding_mode) per spatial rank
CASES = {
    1: [(3, 1, 1, 1, 1, True, "zeros"), (5, 2, 2, 2, 2, False, "reflect")],
    2: [
        (3, 1, 1, 1, 1, True, "zeros"),
        ((3, 5), (2, 1), (1, 2), 1, 4, False, "zeros"),
        (3, 1, 2, 2, 1, True, "circular"),
    ],
    3: [((3, 1, 1), 1, (1, 0, 0), 1, 1, True, "zeros"), ((1, 3, 3), (1, 2, 2), (0, 1, 1), 1, 2, True, "replicate")],
}
PARAMS = [(d, *case) for d, cases in CASES.items() for case in cases]


@pytest.fixture(params=["grouped", "unfold"])
def engine(request, monkeypatch):
    """Run a test with each engine of the gated convolution (2D without groups can use either)."""
    from seqctx.modules import gated_conv

    def rule(device, dims, groups, depth, columns):
        return request.param == "unfold" and dims == 2 and groups == 1

    monkeypatch.setattr(gated_conv, "use_unfold", rule)
    return request.param


def reference_forward(layer, x):
    """Loop over samples: plain convolution of x[n] with weight * gate(x)[n]."""
    gate = layer.gate(x)
    outs = []
    for n in range(x.shape[0]):
        xn = x[n : n + 1]
        padding = layer.padding
        if layer.padding_mode != "zeros":
            xn = F.pad(xn, layer._reversed_padding_repeated_twice, mode=layer.padding_mode)
            padding = 0
        fn = CONV_FN[x.dim() - 2]
        outs.append(fn(xn, layer.weight * gate[n], layer.bias, layer.stride, padding, layer.dilation, layer.groups))
    return torch.cat(outs)


@pytest.mark.parametrize("dims,kernel,stride,padding,dilation,groups,bias,mode", PARAMS)
def test_cgc_equals_per_sample_convolution(dims, kernel, stride, padding, dilation, groups, bias, mode, engine):
    layer = CGC[dims](32, 48, kernel, stride, padding, dilation, groups, bias, mode)
    x = torch.randn(3, 32, *[s + 4 for s in spatial_shape(dims)])
    y = layer(x)
    ref = reference_forward(layer, x)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    # the gate has the kernel's shape per sample, values in (0, 1)
    gate = layer.gate(x)
    assert gate.shape == (3, *layer.weight.shape)
    assert gate.min() > 0 and gate.max() < 1


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_cgc_gradients_match_reference(dims, engine):
    layer = CGC[dims](16, 24, 3, padding=1, groups=2)
    x = torch.randn(2, 16, *spatial_shape(dims), requires_grad=True)
    grads = {}
    for name, fn in (("fast", layer), ("ref", lambda t: reference_forward(layer, t))):
        layer.zero_grad()
        x.grad = None
        (fn(x) * torch.linspace(-1, 1, 24).view(1, 24, *[1] * dims)).sum().backward()
        grads[name] = [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]
    for a, b in zip(grads["fast"], grads["ref"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert layer.context_gate.encode.weight.grad.abs().sum() > 0


def test_cgc_gate_decomposition_follows_equation_1():
    """G[n, h, i, k] = sigmoid(G1[n, i, k] + G2[n, h, k]) with grouped channel mapping."""
    layer = ContextGatedConv2d(8, 6, 3, groups=2, channels_per_group=4)
    x = torch.randn(2, 8, 9, 9)
    gate = layer.gate(x)  # (2, 6, 4, 3, 3)
    logit = torch.logit(gate.double()).flatten(3)
    # the logit separates into a part that depends on the input channel and one on the output channel
    g = logit.view(2, 2, 3, 4, 9)  # (N, groups, O/g, C/g, K)
    centred = g - g.mean(3, keepdim=True) - g.mean(2, keepdim=True) + g.mean((2, 3), keepdim=True)
    assert centred.abs().max() < 1e-4


def test_cgc_channel_interacting_is_grouped_with_shared_weight():
    layer = ContextGatedConv2d(64, 128, 3)
    assert layer.context_gate.interact_groups == 4
    assert layer.context_gate.interact.weight.shape == (32, 16)
    small = ContextGatedConv2d(3, 64, 7)  # the ResNet stem: plain linear
    assert small.context_gate.interact.weight.shape == (64, 3)
    assert small.context_gate.encode.weight.shape == (49 // 2 + 1, 49)
    # parameters of the gate: E 9x5, three BatchNorms, I 16x32, D_c and D_o 5x9
    extra = sum(p.numel() for p in layer.context_gate.parameters())
    assert extra == 45 + 2 * (64 + 64 + 128) + 16 * 32 + 2 * 45


def test_cgc_with_unit_kernel_is_plain_convolution():
    plain = nn.Conv2d(8, 16, 1)
    layer = ContextGatedConv2d.from_conv(plain)
    assert layer.context_gate is None
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(layer(x), plain(x))
    assert torch.equal(layer.gate(x), torch.ones(2, 16, 8, 1, 1))


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_from_conv_keeps_weights_and_state_dict_names(dims):
    plain = PLAIN[dims](8, 12, 3, stride=2, padding=1, bias=True)
    layer = CGC[dims].from_conv(plain)
    assert torch.equal(layer.weight, plain.weight) and torch.equal(layer.bias, plain.bias)
    assert layer.stride == plain.stride and layer.padding == plain.padding
    assert set(plain.state_dict()) <= set(layer.state_dict())
    # a fresh layer loads the state dict and gives the same output
    twin = CGC[dims](8, 12, 3, stride=2, padding=1)
    twin.load_state_dict(layer.state_dict())
    x = torch.randn(2, 8, *spatial_shape(dims))
    layer.eval(), twin.eval()
    torch.testing.assert_close(layer(x), twin(x))
    with pytest.raises(TypeError, match="expects a"):
        CGC[dims].from_conv(nn.Linear(3, 3))


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_cgc_eval_mode_is_batch_independent(dims):
    layer = CGC[dims](16, 16, 3, padding=1)
    x = torch.randn(4, 16, *spatial_shape(dims))
    layer.train()
    for _ in range(3):
        layer(x)  # populate the BatchNorm running statistics
    layer.eval()
    full = layer(x)
    single = torch.cat([layer(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(full, single, rtol=1e-5, atol=1e-5)


def frame_reference(layer, x, num_frames):
    """Loop over videos and frames: frame f of video n convolved with W * G[n, :, :, floor(f t / T)]."""
    gate = layer.gate(x)
    t = gate.shape[3] if layer.time_slices > 1 else 1
    gate = gate if layer.time_slices > 1 else gate.unsqueeze(3)
    outs = []
    for i in range(x.shape[0]):
        n, f = divmod(i, num_frames)
        w = layer.weight * gate[n, :, :, f * t // num_frames]
        outs.append(F.conv2d(x[i : i + 1], w, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups))
    return torch.cat(outs)


def assert_same_values_and_gradients(layer, fast, ref, x):
    grads = {}
    for name, fn in (("fast", fast), ("ref", ref)):
        layer.zero_grad()
        x.grad = None
        y = fn(x)
        (y * torch.linspace(-1, 1, y.shape[1]).view(1, -1, *[1] * (y.dim() - 2))).sum().backward()
        grads[name] = [y.detach(), x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]
    assert grads["fast"][0].shape == grads["ref"][0].shape
    for a, b in zip(grads["fast"], grads["ref"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("frames", "groups", "bias"), [(8, 1, False), (16, 2, True), (4, 1, True), (2, 1, False)])
def test_video_gate_has_time_slices_and_equals_a_loop_over_frames(frames, groups, bias, engine):
    """Sec. 3.3: a c x k x k x k context cube, o x c x t x k x k gates; T < t works too."""
    n = 2
    layer = ContextGatedConv2d(16, 16, 3, padding=1, groups=groups, bias=bias, num_segments=frames)
    assert layer.context_size == (3, 3, 3) and layer.time_slices == 3
    assert layer.context_gate.encode.weight.shape == (27 // 2 + 1, 27)
    assert layer.context_gate.decode_in.weight.shape == (3 * 9, 14)  # D_c: d -> t * k * k
    x = torch.randn(n * frames, 16, 8, 10, requires_grad=True)
    gate = layer.gate(x)
    assert gate.shape == (n, 16, 16 // groups, 3, 3, 3)
    clips = x.view(n, frames, 16, 8, 10).transpose(1, 2)
    ctx = F.adaptive_avg_pool3d(clips, (3, 3, 3)).flatten(2)
    torch.testing.assert_close(gate, layer.context_gate(ctx).view_as(gate))
    assert not torch.allclose(gate[:, :, :, 0], gate[:, :, :, 2])  # the gate varies over time
    assert_same_values_and_gradients(layer, layer, lambda t: frame_reference(layer, t, frames), x)
    with pytest.raises(ValueError, match=f"not a multiple of num_segments={frames}"):
        layer(torch.randn(frames + 1, 16, 8, 8))


def test_time_slices_partition_the_frames_as_floor_f_t_over_T():
    from seqctx.modules.cgc import slice_bounds

    for frames, t in ((8, 3), (16, 3), (2, 3), (7, 7), (5, 2), (1, 3)):
        bounds = slice_bounds(frames, t)
        cells = [next(s for s, (lo, hi) in enumerate(bounds) if lo <= f < hi) for f in range(frames)]
        assert cells == [f * t // frames for f in range(frames)]
        assert bounds[0][0] == 0 and bounds[-1][1] == frames  # contiguous, every frame once
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))


def test_temporal_gate_false_is_one_gate_per_video():
    t, n = 4, 2
    layer = ContextGatedConv2d(16, 16, 3, padding=1, num_segments=t, temporal_gate=False)
    assert layer.time_slices == 1 and layer.context_gate.decode_in.weight.shape == (9, 14)
    x = torch.randn(n * t, 16, 8, 10, requires_grad=True)
    assert layer.gate(x).shape == (n, 16, 16, 3, 3)
    assert_same_values_and_gradients(layer, layer, lambda v: frame_reference(layer, v, t), x)


def clip_reference(layer, x):
    """A 1 x k x k 3D conv, output step f of video n: frame f * stride_t of the time-padded input,
    convolved in 2D with W * G[n, :, :, floor(f t / T')]."""
    gate = layer.gate(x)  # (N, O, C/g, t, 1, kh, kw)
    t = gate.shape[3]
    pt, ph, pw = layer.padding
    if layer.padding_mode == "zeros":
        xp, padding = F.pad(x, (0, 0, 0, 0, pt, pt)), (ph, pw)
    else:
        xp, padding = F.pad(x, (pw, pw, ph, ph, pt, pt), mode=layer.padding_mode), 0
    steps = range(0, xp.shape[2], layer.stride[0])
    out = torch.stack(
        [
            torch.cat([F.conv2d(xp[v : v + 1, :, j], layer.weight[:, :, 0] * gate[v, :, :, f * t // len(steps), 0],
                                layer.bias, layer.stride[1:], padding, layer.dilation[1:], layer.groups)
                       for v in range(x.shape[0])])
            for f, j in enumerate(steps)
        ],
        dim=2,
    )  # fmt: skip
    return out


@pytest.mark.parametrize(
    ("stride", "padding", "mode"),
    [((1, 1, 1), (0, 1, 1), "zeros"), ((2, 2, 2), (0, 1, 1), "zeros"), ((1, 1, 1), (1, 1, 1), "zeros"),
     ((1, 1, 1), (1, 1, 1), "replicate")],
)  # fmt: skip
def test_cgc3d_spatial_conv_has_a_time_varying_gate(stride, padding, mode, engine):
    layer = ContextGatedConv3d(8, 12, (1, 3, 3), stride, padding, groups=2, padding_mode=mode, context_size=(3, 3, 3))
    assert layer.time_slices == 3
    x = torch.randn(2, 8, 7, 6, 5, requires_grad=True)
    assert layer.gate(x).shape == (2, 12, 4, 3, 1, 3, 3)
    assert_same_values_and_gradients(layer, layer, lambda v: clip_reference(layer, v), x)
    plain = ContextGatedConv3d(8, 12, (1, 3, 3), stride, padding, padding_mode=mode, context_size=(3, 3, 3),
                               temporal_gate=False)  # fmt: skip
    assert plain.time_slices == 1 and plain.gate(x).shape == (2, 12, 8, 1, 3, 3)
    assert plain(x).shape == layer(x).shape


def test_cgc3d_context_size_gives_cgc1d_and_cgc3d():
    temporal = ContextGatedConv3d(16, 16, (3, 1, 1), padding=(1, 0, 0))
    assert temporal.context_size == (3, 1, 1)  # CGC-1D: temporal context
    assert temporal.context_gate.encode.weight.shape == (2, 3)
    spatial = ContextGatedConv3d(16, 16, (1, 3, 3), padding=(0, 1, 1), context_size=(3, 3, 3))
    assert spatial.context_gate.encode.weight.shape == (14, 27)  # CGC-3D: cube context
    x = torch.randn(2, 16, 6, 7, 7)
    assert spatial(x).shape == (2, 16, 6, 7, 7)
    assert spatial.gate(x).shape == (2, 16, 16, 3, 1, 3, 3)  # t = 3 time slices
    assert temporal.time_slices == 1 and temporal.gate(x).shape == (2, 16, 16, 3, 1, 1)
    with pytest.raises(ValueError, match="context_size must be 3 positive ints"):
        ContextGatedConv3d(4, 4, 3, context_size=(3, 3))
    with pytest.raises(ValueError, match="num_segments applies to ContextGatedConv2d only"):
        ContextGatedConv3d(4, 4, 3, num_segments=8)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_cgc_low_precision(dims, dtype):
    layer = CGC[dims](16, 16, 3, padding=1).eval()
    x = torch.randn(2, 16, *spatial_shape(dims))
    ref = layer(x)
    out = layer.to(dtype)(x.to(dtype))
    assert out.dtype == dtype
    tol = DTYPE_TOL[dtype] * 10
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)


def test_cgc_autocast_bf16(engine):
    layer = ContextGatedConv2d(16, 16, 3, padding=1)
    x = torch.randn(2, 16, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert layer.weight.grad is not None


def test_cgc_compiles_without_graph_breaks():
    layer = ContextGatedConv2d(16, 16, 3, padding=1, num_segments=2)
    x = torch.randn(4, 16, 8, 8, requires_grad=True)
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    assert_same_values_and_gradients(layer, compiled, layer, x)


@pytest.mark.parametrize("num_segments", [None, 4])
def test_cgc_exports_with_a_dynamic_batch(num_segments):
    layer = ContextGatedConv2d(8, 8, 3, padding=1, num_segments=num_segments).eval()
    batch = torch.export.Dim("batch", min=2, max=64)  # export specialises sizes 0 and 1
    dims = {0: batch * 4} if num_segments else {0: batch}
    program = torch.export.export(layer, (torch.randn(8, 8, 6, 6),), dynamic_shapes={"x": dims})
    for n in (12, 20):
        x = torch.randn(n, 8, 6, 6)
        torch.testing.assert_close(program.module()(x), layer(x))


@pytest.mark.parametrize("dims", [2, 3])
def test_chunked_units_give_the_same_values_and_gradients(dims, engine):
    from seqctx.modules.gated_conv import _chunks

    video = dict(num_segments=4) if dims == 2 else dict(context_size=(3, 3, 3))
    kernel = 3 if dims == 2 else (1, 3, 3)
    whole = CGC[dims](8, 12, kernel, padding=1 if dims == 2 else (0, 1, 1), groups=2, **video)
    tiny = CGC[dims](8, 12, kernel, padding=1 if dims == 2 else (0, 1, 1), groups=2, kernel_budget=1, **video)
    tiny.load_state_dict(whole.state_dict())
    x = torch.randn(12 if dims == 2 else 3, 8, *((6, 7) if dims == 2 else (4, 6, 7)), requires_grad=True)
    results = []
    for layer in (whole, tiny):
        x.grad = None
        y = layer(x)
        (y * torch.randn_like(y, generator=torch.Generator().manual_seed(1))).sum().backward()
        results.append([y.detach(), x.grad.clone()] + [p.grad.clone() for p in layer.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert _chunks(10, per_unit_bytes=100, per_unit_outputs=1, budget=250) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    # a chunk's convolution output stays under 2^31 elements whatever the budget
    assert _chunks(8, per_unit_bytes=1, per_unit_outputs=2**29, budget=2**40) == [(0, 3), (3, 6), (6, 8)]


def test_backward_keeps_no_batch_sized_kernel():
    """Saved for backward: the input (not a padded copy), the weight, the logits and the context
    path's small tensors."""
    layer = ContextGatedConv2d(64, 64, 3, padding=1, bias=False)
    x = torch.randn(16, 64, 7, 7, requires_grad=True)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x)
    gated_kernels = 16 * 64 * 64 * 9
    assert max(sizes) == x.numel() < gated_kernels
