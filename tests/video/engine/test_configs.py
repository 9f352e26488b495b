from pathlib import Path

import pytest

from seqctx.video.engine import load_config
from seqctx.video.engine.demo import DEMO_CONFIG
from seqctx.video.models import build_model

CONFIGS = [*sorted((Path(__file__).parents[3] / "video_configs").glob("*.yaml")), DEMO_CONFIG]  # demo: packaged


def test_there_is_a_config_per_table_row():
    names = {p.stem for p in CONFIGS}
    for arch in ("tsn", "tsm"):
        for f in (8, 16):
            assert {f"{arch}_r50_sthv1_{f}f", f"{arch}_r50_cgc_sthv1_{f}f"} <= names
    assert {
        "p3d_r50_sthv1_32f",
        "p3d_r50_cgc1d_sthv1_32f",
        "p3d_r50_cgc3d_sthv1_32f",
        "p3d_r50_cgc1d3d_sthv1_32f",
    } <= names
    assert {"i3d_r50_k400_32f", "i3d_r50_gct_k400_32f", "i3d_r101_k400_32f", "i3d_r101_gct_k400_32f",
            "i3d_r50_gct_official_k400_32f", "tsm_r50_k400_8f"} <= names  # fmt: skip
    assert {"tsm_r50_sthv2_8f", "tsm_r50_cgc_sthv2_8f"} <= names
    assert {"demo_synthetic", "my_videos_tsm_r18"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_validates_and_builds_its_model(path):
    cfg = load_config(path)
    m = cfg.model
    model = build_model(m.name, m.num_classes, num_segments=m.num_segments, context=m.context, width=4, input_size=64,
                        stride_in_1x1=m.stride_in_1x1)  # fmt: skip
    assert model is not None
    views = (cfg.data.test_clips, cfg.data.test_crops)
    if "sthv1" in path.stem:
        assert cfg.data.flip is False and cfg.model.num_classes == 174
        # CGC paper Table 3: TSN/TSM on one view (TSM's single-clip, centre-crop setting); P3D 10 x 3
        assert views == ((10, 3) if m.name.startswith("p3d") else (1, 1)), path.stem
    # validation inside training: one view every epoch; the test protocol is `seqctx test`'s
    assert (cfg.data.val_clips, cfg.data.val_crops) == (1, 1), path.stem
    # Non-local's fully convolutional testing: crops of 256; GE-theta's fixed-size gather tests at data.size
    crop = cfg.data.test_crop_size or cfg.data.size
    assert crop == (cfg.data.size if m.context in ("ge_theta", "ge_theta_plus") or views == (1, 1) else 256)
    if "sthv1" in path.stem or "sthv2" in path.stem:  # TSM's code and its published SS command (--npb)
        assert cfg.optim.policy == "tsm" and cfg.train.freeze_bn == "none", path.stem
    if "sthv2" in path.stem:  # TSM's accurate setting; flip with the left/right classes swapped
        assert views == (2, 3) and cfg.data.flip == "swap_left_right" and cfg.optim.milestones == [20, 40]
    if "k400" in path.stem:
        assert views == (10, 3) and cfg.model.num_classes == 400
        # the GCT authors' own start (their weights, stride, decay rule); every other row differs from its
        # baseline only by its operator
        official = path.stem == "i3d_r50_gct_official_k400_32f"
        assert cfg.optim.no_decay == ("declared" if official else "norm_bias")  # GCT paper, app. A
        assert cfg.model.stride_in_1x1 is official
        if m.name.startswith("i3d"):  # Non-local's scale jittering in [256, 320]
            assert cfg.data.crop == "scale_jitter" and cfg.data.scale_range == [256, 320]


def test_the_gct_rows_differ_from_their_baselines_only_by_gct():
    def flat(path):
        sections = load_config(path).to_dict().items()
        return {f"{s}.{k}": v for s, d in sections if isinstance(d, dict) for k, v in d.items()}

    for depth in ("r50", "r101"):
        base, gct = (flat(next(p for p in CONFIGS if p.stem == f"i3d_{depth}{c}_k400_32f")) for c in ("", "_gct"))
        assert {k for k in base if base[k] != gct[k]} == {"model.context"}, depth
    base, cgc = (flat(next(p for p in CONFIGS if p.stem == f"tsm_r50{c}_sthv2_8f")) for c in ("", "_cgc"))
    assert {k for k in base if base[k] != cgc[k]} == {"model.context"}
