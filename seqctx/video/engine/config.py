"""Experiment configs: YAML files (``_base_`` inheritance or flat), validated into dataclasses.

Unknown keys, wrong types and values outside a key's choices (``Literal`` fields) or range fail
with the key's dotted name (:class:`~seqctx.errors.ConfigError`) when the config is loaded,
before any work starts; ``--set a.b=value`` overrides (values parsed as YAML; ``--set a.b=`` sets an optional key to
none). Keys match the constructor arguments they feed (``build_model``, ``build_transform``, ...).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from seqctx.errors import ConfigError
from seqctx.overrides import apply_overrides
from seqctx.safe_yaml import load_yaml
from seqctx.stopping import signal_number
from seqctx.video.data import Backend, DatasetFormat
from seqctx.video.data.backends import check_frame_template

NoDecay = Literal["declared", "norm_bias"]  # optim.no_decay, see optim.param_groups
NO_DECAY_RULES: tuple[str, ...] = get_args(NoDecay)


@dataclass
class ModelConfig:
    name: str = "tsm_r50"
    num_classes: int = 174
    num_segments: int = 8
    context: str | None = None
    dropout: float = 0.5
    pretrained: str | None = None
    width: int = 64
    stride_in_1x1: bool = False
    context_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {reduction: 8} for se
    shift: Literal["offline", "online"] = "offline"  # TSM: online = from frame t-1 only (streams, seqctx.video.online)


@dataclass
class DataConfig:
    format: DatasetFormat = "ssv2"
    root: str = ""
    train_annotation: str = ""
    val_annotation: str | None = None
    labels: str | None = None
    backend: Backend = "auto"  # auto: frames for folders, else the first installed of pyav, decord, torchcodec
    frame_template: str | None = None  # frame folders' file names, e.g. img_{:05d}.jpg; null: found per folder
    first_frame: int | None = None  # the number of a folder's first frame (0 or 1); null: its lowest
    sampler: Literal["segments", "dense"] = "segments"
    frame_interval: int = 1
    size: int = 224
    scale_size: int | None = None
    crop: Literal["multiscale", "scale_jitter", "random_resized"] = "multiscale"
    scale_range: list[int] = field(default_factory=lambda: [256, 320])  # crop: scale_jitter's short sides
    flip: bool | Literal["swap_left_right"] = True  # swap_left_right: flip and swap the left/right class pairs
    color_jitter: float | None = None  # brightness/contrast/saturation factor, one draw per clip
    randaugment: list[int] | None = None  # [num_ops, magnitude], one draw per clip
    repeat_aug: int = 1  # each video this many times per epoch stretch, differently augmented (DeiT's RASampler)
    test_clips: int = 1  # the test protocol (`seqctx test`): clips x crops of test_crop_size
    test_crops: Literal[1, 3, 10] = 1
    test_crop_size: int | None = None  # default: size (TSM's full-resolution testing: 256 after scale_size 256)
    val_clips: int = 1  # validation inside `seqctx train`, every eval_every epochs: clips x centre crops of size
    val_crops: Literal[1, 3, 10] = 1
    test_batch_clips: int | None = None  # clips per evaluation forward (a video's views may span two); batch_size
    batch_size: int = 8
    workers: int = 2
    decode_threads: int = 1  # per loader worker (decord, PyAV); FFmpeg's auto would be cores + 1 each
    decode_short_side: int | None = None  # frames leave the decoder with at most this shorter side; null: as stored
    decode_timeout: float | None = 120.0  # seconds a video may take to decode before it counts as unreadable
    prefetch_factor: int = 2  # batches each loader worker prepares ahead
    shuffle: bool = True  # training: an order drawn anew each epoch; false: the annotation's (index's) order
    shuffle_buffer: int = 1000  # format shards: samples shuffled within windows of this many (1: shard order only)
    on_error: Literal["replace", "raise"] = "replace"  # training only: evaluation never replaces a video


@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 5e-4
    no_decay: NoDecay = "norm_bias"  # declared: only no_weight_decay() (GCT paper); norm_bias: TSM/TSN code
    policy: Literal["decay_groups", "tsm"] = "decay_groups"  # tsm: TSM's get_optim_policies (lr x2/x5/x10 groups)
    schedule: Literal["step", "multistep", "cosine"] = "multistep"
    milestones: list[int] = field(default_factory=lambda: [26, 36])
    step_size: int = 30
    gamma: float = 0.1
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    clip_grad: float | None = 20.0
    label_smoothing: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 45
    seed: int = 0
    amp: Literal["bf16", "fp16"] | None = None  # fp16 on CUDA only
    channels_last: bool = False
    accumulate: int = 1
    freeze_bn: Literal["none", "partial", "all"] = "none"  # partial: TSN, all but the first BN
    sync_bn: bool = False
    eval_every: int = 1
    checkpoint_every: int = 0  # iterations between mid-epoch checkpoints (0: at epoch ends only)
    keep_checkpoints: int = 1  # past saves of latest.pt kept as checkpoint_e<E>_i<I>.pt (resume falls back to them)
    resume: Literal[False, "auto"] = False  # auto: continue the run in work_dir when there is one, else start it
    stop_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])  # save at an iteration, exit 75
    mixup: float | None = None  # Beta(alpha, alpha) of mixup; soft targets
    cutmix: float | None = None  # Beta(alpha, alpha) of CutMix; with mixup too, one of the two per batch
    ema: float | None = None  # decay of an exponential moving average of the weights (saved as model_ema)
    max_nonfinite_steps: int = 5  # steps in a row with non-finite gradients skipped before the run stops
    cudnn_benchmark: bool = True  # CUDA: let cuDNN pick its fastest kernels (training sizes are fixed)
    log_every: int = 10
    tensorboard: bool = False  # also write TensorBoard event files (the tensorboard extra)
    device: str = "auto"
    threads: int | None = None


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    work_dir: str = "work_dirs/run"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Keys that were merged into others: what to set instead.
MOVED = {"model.input_size": "data.size is the one knob (the model is built for the frames' side it is trained at)"}
# Keys with a lower bound.
MINIMUM: dict[str, float] = {
    "model.num_classes": 1, "model.num_segments": 1, "model.width": 1,
    "data.frame_interval": 1, "data.size": 1, "data.scale_size": 1, "data.test_clips": 1, "data.val_clips": 1,
    "data.test_crop_size": 1, "data.test_batch_clips": 1, "data.batch_size": 1,
    "data.workers": 0, "data.repeat_aug": 1, "data.color_jitter": 0,
    "data.decode_threads": 1, "data.decode_short_side": 1, "data.decode_timeout": 0.001,
    "data.prefetch_factor": 1, "data.first_frame": 0, "data.shuffle_buffer": 1,
    "optim.lr": 0, "optim.weight_decay": 0, "optim.step_size": 1, "optim.warmup_epochs": 0,
    "train.epochs": 1, "train.accumulate": 1, "train.eval_every": 1, "train.checkpoint_every": 0,
    "train.keep_checkpoints": 0, "train.mixup": 0, "train.cutmix": 0, "train.ema": 0, "train.log_every": 1,
    "train.threads": 1, "train.max_nonfinite_steps": 1,
}  # fmt: skip


def _check_type(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        if not any(value == c and type(value) is type(c) for c in choices):
            raise ConfigError(f"config key {key!r} must be one of {', '.join(map(repr, choices))}; got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if (value is None or value == "") and type(None) in options:  # `--set key=` means none
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _check_type(value, opt, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if hint is Any:
        return value
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"config key {key!r} must be a mapping of names to values, got {value!r}")
        _, inner = typing.get_args(hint)
        return {k: _check_type(v, inner, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r} must be a list, got {value!r}")
        (inner,) = typing.get_args(hint)
        return [_check_type(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML reads 5e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"config key {key!r} must be {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = prefix + unknown[0]
        if key in MOVED:
            raise ConfigError(f"config key {key!r} is gone: {MOVED[key]}")
        raise ConfigError(f"unknown config key {key!r}; valid keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_type(value, hint, prefix + name)
    return cls(**kwargs)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config with its ``_base_`` files (a path or a list, relative to the file) merged
    underneath, each safely loaded (:func:`~seqctx.safe_yaml.load_yaml`: a key given twice is an
    error)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping")
    bases = data.pop("_base_", [])
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = _merge(merged, read_yaml(path.parent / base))
    return _merge(merged, data)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read, merge, override and validate a config."""
    data = read_yaml(path) if path is not None else {}
    return config_from_dict(apply_overrides(data, overrides or []))


def _validate(cfg: Config) -> Config:
    """Lower bounds, and the model's name and context, each named by its dotted key."""
    from seqctx.video.models import MODELS

    for key, low in MINIMUM.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is not None and value < low:
            raise ConfigError(f"config key {key!r} must be >= {low:g}, got {value!r}")
    d = cfg.data
    reads_frames = d.format == "ssv1"  # list files may hold either
    if d.backend != "auto" and d.format != "list" and reads_frames != (d.backend == "frames"):
        want = "frames (JPEG frame folders)" if reads_frames else "a video decoder (decord, pyav, torchcodec)"
        raise ConfigError(
            f"config key 'data.backend' is {d.backend!r}, but data.format={d.format!r} reads {want}; set "
            "data.backend to that, or auto"
        )
    if d.frame_template is not None:
        try:
            check_frame_template(d.frame_template)
        except ValueError as e:
            raise ConfigError(f"config key 'data.frame_template' {e}") from None
    check_views(d.sampler, d.test_clips, "data.test_clips")
    check_views(d.sampler, d.val_clips, "data.val_clips")
    scale, crop = d.scale_size or d.size * 256 // 224, d.test_crop_size or d.size
    if crop > scale:
        key = "data.test_crop_size" if d.test_crop_size else "data.size"
        raise ConfigError(
            f"config key {key!r} is {crop}, larger than the frames' short side after resizing for testing "
            f"(data.scale_size, {scale}); raise data.scale_size or lower {key}"
        )
    for name in cfg.train.stop_signals:
        signal_number(name)
    if cfg.train.ema is not None and not 0.0 < cfg.train.ema < 1.0:
        raise ConfigError(f"config key 'train.ema' is the decay of the weight average, in (0, 1) (e.g. 0.9998); "
                          f"got {cfg.train.ema}")  # fmt: skip
    if d.randaugment is not None and len(d.randaugment) != 2:
        raise ConfigError(f"config key 'data.randaugment' is [num_ops, magnitude] (e.g. [2, 9]); got {d.randaugment}")
    if d.crop == "scale_jitter" and (len(d.scale_range) != 2 or not d.size <= d.scale_range[0] <= d.scale_range[1]):
        raise ConfigError(
            f"config key 'data.scale_range' must be [low, high] with data.size ({d.size}) <= low <= high; "
            f"got {d.scale_range}"
        )
    m = cfg.model
    info = MODELS.get(m.name)
    if info is None:
        raise ConfigError(f"config key 'model.name' must be one of {', '.join(MODELS)}; got {m.name!r}")
    if m.context is not None and m.context not in info.contexts:
        raise ConfigError(
            f"config key 'model.context' {m.context!r} is not available for {m.name}; "
            f"valid choices: null, {', '.join(info.contexts)}"
        )
    return cfg


def check_views(sampler: str, clips: int, key: str) -> None:
    """Clips a sampler can test with: at least 1; segment sampling tests with 1 clip (the segment
    centres) or 2 (TSM's twice-sampling: centres and starts). :class:`ConfigError` naming ``key``."""
    if clips < 1:
        raise ConfigError(f"{key} must be >= 1, got {clips}")
    if sampler == "segments" and clips not in (1, 2):
        raise ConfigError(
            f"{key}={clips}: segment sampling (data.sampler=segments, TSN/TSM) tests with 1 clip or 2 (TSM's "
            "twice-sampling); dense sampling (3D models) takes any number"
        )


def config_from_dict(data: dict[str, Any]) -> Config:
    """Validate a config mapping (as read from YAML) into a :class:`Config`."""
    return _validate(_build(Config, data))


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
