"""Training: ``Trainer(cfg).fit()``; the same code runs alone or under ``torchrun`` (DDP)."""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from seqctx.errors import CheckpointError, ConfigError, DataError, UserError, WorkDirError
from seqctx.modules import OPERATOR_TYPES
from seqctx.outputs import output_folder
from seqctx.stopping import Preempted, StopSignals
from seqctx.video.data import fold_views

from .builders import EpochSampler, make_dataset, make_loader, make_model, memory_format
from .checkpoint import (
    load_resumable,
    resumable_files,
    retain_checkpoint,
    retained_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)  # fmt: skip
from .config import Config, save_config
from .distributed import (
    all_gather_objects,
    all_reduce_sum,
    barrier,
    cleanup,
    cpu_group,
    init_distributed,
    is_main,
    local_device,
    on_main,
)  # fmt: skip
from .ema import WeightEMA
from .evaluate import EvalResult, amp_dtype, checkpoint_config, evaluate_dataset, model_conflicts
from .mixing import MixupCutmix
from .optim import build_optimizer, build_scheduler
from .state import RunState
from .workdir_lock import WorkDirLock

log = logging.getLogger(__name__)

# What a run writes into its work_dir: a folder holding any of these (or retained checkpoints)
# holds a run. The files a run writes before it has trained (its config and class list) do not
# make one: a run that failed before its first log line leaves nothing to keep, and the next run
# writes them anew.
RUN_FILES = ("latest.pt", "best.pt", "metrics.jsonl", "loss.png", "accuracy.png", "tensorboard")
SETUP_FILES = ("config.yaml", "classes.txt")


class RunFinished(Exception):
    """``resume="auto"`` found a finished run in the work folder: nothing to train."""


class NonFiniteLoss(UserError, FloatingPointError):
    """The gradients were not finite for ``train.max_nonfinite_steps`` optimiser steps in a row."""


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None (``metrics.jsonl`` is JSON Lines: no bare NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_files(work_dir: Path) -> list[Path]:
    """The files of a run in ``work_dir`` (:data:`RUN_FILES` and retained checkpoints)."""
    return [work_dir / n for n in RUN_FILES if (work_dir / n).exists()] + retained_checkpoints(work_dir)


def tensorboard_writer(folder: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``folder`` (``train.tensorboard``; the optional
    ``tensorboard`` extra)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "train.tensorboard: true needs the tensorboard package: pip install 'seqctx[tensorboard]'"
        ) from None
    return SummaryWriter(str(folder))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def process_state_restorer() -> Callable[[], None]:
    """Capture the process-wide state a run changes (torch's thread count, the Python, NumPy and
    torch CPU RNG states) and return the function that puts it back."""
    threads, py, np_state = torch.get_num_threads(), random.getstate(), np.random.get_state()
    cpu = torch.get_rng_state()

    def restore() -> None:
        torch.set_num_threads(threads)
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(cpu)

    return restore


def backbone_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorms outside the context operators (``OPERATOR_TYPES``): the backbone's
    normalisers, the ones ImageNet weights fill, in network order."""
    inside = {id(m) for op in model.modules() if isinstance(op, OPERATOR_TYPES) for m in op.modules()}
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in inside]


def sync_backbone_norms(model: nn.Module) -> nn.Module:
    """The backbone's BatchNorms (:func:`backbone_norms`) as ``SyncBatchNorm``; the normalisers
    inside context operators (CGC's gate ``BatchNorm1d``, GE-theta's) keep per-process statistics
    and cost no collectives."""
    convert = {id(m) for m in backbone_norms(model)}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in convert and not isinstance(child, nn.SyncBatchNorm):
                setattr(parent, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return model


def freeze_batchnorm(model: nn.Module, mode: str) -> None:
    """Freeze the backbone's BatchNorms (:func:`backbone_norms`); the normalisers inside context
    operators (GE-theta's gather BN, CE's, CGC's gate norms) always train, since no pretrained
    weights fill them. ``"all"``: every backbone BN uses its running statistics; ``"partial"``:
    TSN's partial BN, every backbone BN but the first also keeps its affine parameters fixed.
    Call after ``model.train()``."""
    if mode == "none":
        return
    if mode not in ("partial", "all"):
        raise ValueError(f"train.freeze_bn must be 'none', 'partial' or 'all', got {mode!r}")
    for i, m in enumerate(backbone_norms(model)):
        if mode == "partial" and i == 0:
            continue
        m.eval()
        if mode == "partial" and m.affine:
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)


def move_run_aside(work_dir: Path) -> Path:
    """Move the files of the run in ``work_dir`` into ``work_dir/replaced-<date>-<time>/``."""
    dest = work_dir / time.strftime("replaced-%Y%m%d-%H%M%S")
    dest.mkdir()
    for path in run_files(work_dir) + [work_dir / n for n in SETUP_FILES if (work_dir / n).exists()]:
        shutil.move(path, dest / path.name)
    return dest


class Trainer:
    """Trains ``cfg.model`` on ``cfg.data`` and evaluates it; writes into ``cfg.work_dir``:
    ``config.yaml`` (resolved), ``metrics.jsonl``, ``latest.pt``, ``best.pt`` and the plots.

    Use it as a context manager, ``with Trainer(cfg) as trainer: trainer.fit()``: leaving the block
    closes the TensorBoard writer and the torchrun process group it may have started, and puts
    back the thread count (``train.threads``) and the global RNG states (seeded with
    ``train.seed + rank``) as they were before the trainer was made.

    A work folder that holds a run is never written over silently: ``resume=True`` continues it
    from ``latest.pt`` (with the same model: another model is a :class:`CheckpointError`; an
    unreadable ``latest.pt`` falls back to the newest readable retained checkpoint, with a
    warning), ``overwrite=True`` moves its files into ``replaced-<date>-<time>/`` and starts
    afresh, ``resume="auto"`` (default: ``train.resume``) resumes when there is a checkpoint and
    starts otherwise (:class:`RunFinished` when the run is done), and none of them raises
    :class:`WorkDirError`. The folder is locked while the trainer lives (``run.lock``: a second run
    there is refused); ``fit()`` and ``close()`` release it.

    During ``fit()`` the signals of ``train.stop_signals`` stop the run at the next optimiser-step
    boundary (every rank at the same one) after saving ``latest.pt`` there: :class:`Preempted`.
    ``on_iteration(epoch, iteration)`` is called after every iteration (tests use it to stop a run
    as a kill would).
    """

    def __init__(
        self, cfg: Config, resume: bool | Literal["auto"] | None = None, overwrite: bool = False,
        progress: bool = True, on_iteration: Callable[[int, int], None] | None = None,
    ) -> None:  # fmt: skip
        self.cfg, self.progress, self.on_iteration = cfg, progress, on_iteration
        self._restore_process_state = process_state_restorer()
        self.tensorboard = None
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = local_device(t.device)
        self.rank, self.world = init_distributed(self.device)
        self.work_dir = Path(cfg.work_dir)
        output_folder(self.work_dir, "work_dir")
        self._lock = WorkDirLock(self.work_dir)
        try:
            on_main(self._lock.acquire)
            self._setup(t.resume if resume is None else resume, overwrite)
        except BaseException:
            self.close()
            raise

    def _setup(self, resume: bool | Literal["auto"], overwrite: bool) -> None:
        cfg, t = self.cfg, self.cfg.train
        self.stop_group = cpu_group()
        seed_everything(t.seed + self.rank)  # each process its own dropout masks; DDP copies rank 0's weights
        resume_from = self._claim_work_dir(resume, overwrite)
        self.amp = amp_dtype(t.amp, self.device)
        self.model = make_model(cfg).to(self.device)
        if t.sync_bn and self.device.type == "cuda" and self.world > 1:
            self.model = sync_backbone_norms(self.model)
        self.model = self.model.to(memory_format=memory_format(cfg))
        freeze_batchnorm(self.model, t.freeze_bn)  # before the optimiser sees requires_grad
        self.train_set = make_dataset(cfg, "train")  # decides the run's class list
        classes = self.train_set.classes
        self.val_set = make_dataset(cfg, "val", classes=classes) if cfg.data.val_annotation else None
        self.batch = cfg.data.batch_size
        self.sampler = EpochSampler(len(self.train_set), shuffle=cfg.data.shuffle, seed=t.seed, rank=self.rank,
                                    world=self.world, batch_size=self.batch, repeats=cfg.data.repeat_aug,
                                    order=self.train_set.shuffled)  # fmt: skip
        self.iters_per_epoch = self.sampler.steps  # global batches; the last partial one is dropped
        if self.iters_per_epoch == 0:
            raise DataError(
                f"the training set has {len(self.train_set)} videos, fewer than one global batch (data.batch_size="
                f"{self.batch} x {self.world} processes); lower data.batch_size"
            )
        # one loader for the whole run: its workers persist across epochs (the sampler and the
        # dataset's epoch are read anew each epoch)
        self.loader = make_loader(cfg, self.train_set, self.sampler, self.batch, train=True)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        steps = math.ceil(self.iters_per_epoch / t.accumulate)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, steps, t.epochs)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)  # also on soft targets
        self.mixing = MixupCutmix(cfg.model.num_classes, t.mixup, t.cutmix) if (t.mixup or t.cutmix) else None
        self.ema = WeightEMA(self.model, t.ema) if t.ema else None
        self.skipped_steps = torch.zeros((), dtype=torch.long, device=self.device)  # fp16 steps GradScaler skipped
        self.nonfinite_steps, self.nonfinite_in_row = 0, 0  # steps skipped for non-finite gradients (fp32/bf16)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = t.cudnn_benchmark
        self.epoch, self.iteration, self.best_top1 = 0, 0, -1.0
        self.validated = True  # epoch `epoch` had the validation it is due (RunState)
        self.train_loss: float | None = None  # the last finished epoch's
        self.metrics_lines = 0  # lines of metrics.jsonl written (rank 0): a resumed run drops later ones
        self.loss_window = torch.zeros(2, device=self.device)  # (sum of losses, iterations) since the last log
        self.epoch_failures = 0  # videos replaced in the last epoch trained, all processes
        self.loss_total = torch.zeros(2, device=self.device)  # (sum, iterations) of the epoch's global batches
        if resume_from is not None:
            self._restore(resume_from)
        self.ddp: nn.Module = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        if is_main():
            self.work_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.work_dir / "config.yaml")
            if classes:
                (self.work_dir / "classes.txt").write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")
            if t.tensorboard:
                self.tensorboard = tensorboard_writer(self.work_dir / "tensorboard")

    # -- checkpoints ---------------------------------------------------------------------------
    def _claim_work_dir(self, resume: bool | Literal["auto"], overwrite: bool) -> dict[str, Any] | None:
        """Check the work folder before anything is written; returns the checkpoint to resume."""
        wd, t = self.work_dir, self.cfg.train
        if resume and overwrite:
            raise WorkDirError("--resume continues the run in the work folder, --overwrite replaces it: choose one")
        auto = resume == "auto"
        if auto:
            resume = bool(resumable_files(wd))
            overwrite = not resume  # files of a run that never saved a checkpoint are moved aside
            if is_main():
                log.info("%s %s", "resuming the run in" if resume else "starting a run in", wd)
        if resume:
            if not auto and not resumable_files(wd):  # auto resumes only when there are some
                raise WorkDirError(f"nothing to resume in {wd}: it has no latest.pt (start the run without --resume)")
            ckpt, path = load_resumable(wd)
            saved = checkpoint_config(ckpt, path)
            keys = [k for k in vars(saved.model) if k != "pretrained"]
            conflicts = model_conflicts(saved.model, self.cfg.model, keys)
            if conflicts:
                raise CheckpointError(
                    f"cannot resume {wd}: its run trained another model ({'; '.join(conflicts)}); resume with the "
                    "run's own model keys, or --overwrite to start a new run there"
                )
            state = RunState.from_checkpoint(ckpt)
            if state.epoch >= t.epochs and state.iteration == 0 and state.validated:
                if auto:
                    raise RunFinished(f"the run in {wd} is finished ({state.epoch} of {t.epochs} epochs): nothing "
                                      "to train (raise train.epochs to train on)")  # fmt: skip
                raise WorkDirError(
                    f"the run in {wd} is finished ({state.epoch} of train.epochs={t.epochs} epochs); raise "
                    "train.epochs to train on, or --overwrite to start afresh"
                )
            return ckpt
        existing = [p.name for p in run_files(wd)]
        if existing and not overwrite:
            raise WorkDirError(
                f"{wd} holds a run ({', '.join(existing)}): --resume to continue it, --overwrite to start afresh "
                "(its files are moved into a replaced-<date>-<time> folder there), or another --work-dir"
            )
        barrier()  # every process has looked before the main one moves anything
        if existing and is_main():
            log.info("moved the previous run's files to %s", move_run_aside(wd))
        barrier()
        return None

    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else {},
            **RunState(
                self.epoch,
                self.iteration,
                self.iteration * self.sampler.global_batch,
                self.world,
                self.sampler.global_batch,
                self.validated,
                self.best_top1,
                self.train_loss,
                self.metrics_lines,
            ).to_checkpoint(),  # fmt: skip
            "rng": all_gather_objects(rng_state(self.device)),  # one entry per rank
            "config": self.cfg.to_dict(),
            "classes": list(self.train_set.classes),
            "loss_total": self.loss_total.cpu(),
            "loss_window": all_gather_objects(self.loss_window.cpu()),  # one entry per rank
            **(self.ema.state() if self.ema else {}),
        }

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler and ckpt["scaler"]:
            self.scaler.load_state_dict(ckpt["scaler"])
        state = RunState.from_checkpoint(ckpt)
        if state.iteration and state.global_batch != self.sampler.global_batch:
            raise CheckpointError(
                f"cannot continue epoch {state.epoch + 1} exactly: it was trained with a global batch of "
                f"{state.global_batch} ({state.world_size} processes x {state.global_batch // state.world_size}), this "
                f"run has {self.sampler.global_batch} ({self.world} processes x data.batch_size={self.batch}); "
                + (f"resume with --set data.batch_size={state.global_batch // self.world}"
                   if state.global_batch % self.world == 0 else f"resume on {state.world_size} processes")
            )  # fmt: skip
        if state.world_size != self.world and is_main():
            log.warning("the run was trained on %d processes, it continues on %d: epoch %d goes on after its first %d "
                        "samples, each remaining video once", state.world_size, self.world, state.epoch + 1,
                        state.samples_seen)  # fmt: skip
        self.epoch, self.iteration, self.best_top1 = state.epoch, state.iteration, state.best_top1
        self.validated, self.train_loss = state.validated, state.train_loss
        metrics = self.work_dir / "metrics.jsonl"
        if is_main() and "metrics_lines" in ckpt and metrics.is_file():  # older checkpoints: the log as it is
            lines = metrics.read_text().splitlines(keepends=True)[: state.metrics_lines]
            metrics.write_text("".join(lines))  # the lines logged after the checkpoint are logged again
            self.metrics_lines = len(lines)
        states = ckpt["rng"] if isinstance(ckpt["rng"], list) else [ckpt["rng"]]
        if self.ema is not None:
            if "model_ema" in ckpt:
                self.ema.restore(ckpt)
            else:
                log.warning("the checkpoint has no model_ema (train.ema was off): the average starts here")
        if "loss_total" in ckpt:
            self.loss_total.copy_(ckpt["loss_total"])
            windows = ckpt["loss_window"]
            if len(windows) != self.world:  # another world size: the window's sum goes to rank 0
                windows = [sum(windows)] + [torch.zeros(2)] * (self.world - 1)
            self.loss_window.copy_(windows[self.rank])
        if self.rank < len(states):
            set_rng_state(states[self.rank], self.device)
        else:  # more processes than the run had: the new ones start from their seed
            log.info("rank %d: the checkpoint has RNG states for %d processes; seeded afresh", self.rank, len(states))
        log.info("resumed from epoch %d, iteration %d", self.epoch, self.iteration)

    def _save(self, name: str) -> None:
        """Every process calls it (the RNG states are gathered); rank 0 writes, and a failed write
        (:class:`CheckpointError` naming the file; the previous one is kept) stops every rank. Each
        ``latest.pt`` is also retained as ``checkpoint_e<E>_i<I>.pt`` (``train.keep_checkpoints``)."""
        state, path, keep = self._state(), self.work_dir / name, self.cfg.train.keep_checkpoints

        def write() -> None:
            save_checkpoint(state, path)
            if name == "latest.pt":
                retain_checkpoint(path, self.epoch, self.iteration, keep)

        on_main(write)

    def _log(self, record: dict[str, Any]) -> None:
        """A line of ``metrics.jsonl`` and, with ``train.tensorboard``, its numbers as scalars
        (``train/loss``, ``val/top1``, ...; x axis: iterations)."""
        if not is_main():
            return
        record = {k: json_safe(v) for k, v in record.items()}
        with open(self.work_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
        self.metrics_lines += 1
        if self.tensorboard is not None:
            step = record["epoch"] * self.iters_per_epoch + record.get("iteration", 0)
            for key, value in record.items():
                if key not in ("type", "epoch", "iteration") and isinstance(value, int | float):
                    self.tensorboard.add_scalar(f"{record['type']}/{key}", value, step)
            self.tensorboard.flush()

    # -- training ------------------------------------------------------------------------------
    def _stop_if_asked(self, stop: StopSignals, saved: bool, phase: str = "training") -> None:
        """At a boundary: when any rank got a stop signal, save ``latest.pt`` here (unless
        ``saved`` already) and raise :class:`Preempted` on every rank."""
        name = stop.agreed()
        if name is None:
            return
        if not saved:
            self._save("latest.pt")
        raise Preempted(name, self.epoch, self.iteration, str(self.work_dir / "latest.pt"), phase)

    def _train_epoch(self, stop: StopSignals) -> float:
        t, epoch = self.cfg.train, self.epoch
        self.sampler.set_epoch(epoch, start=self.iteration * self.sampler.global_batch)
        self.train_set.set_epoch(epoch)
        self.train_set.reset_failures()
        self.ddp.train()
        freeze_batchnorm(self.model, t.freeze_bn)
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{t.epochs}", disable=not (self.progress and is_main()),
                   initial=self.iteration, total=self.iters_per_epoch, leave=False)  # fmt: skip
        # losses stay on the device between logs: no host synchronisation per iteration
        window, total = self.loss_window, self.loss_total  # kept in checkpoints: a resumed epoch averages it all
        tick, seen = time.perf_counter(), 0
        for clips, labels, _ in bar:
            clips, views = fold_views(clips, self.device)  # uint8 -> float; V = 1 in training: one clip, one crop
            labels = labels.to(self.device, non_blocking=True)  # pinned by the loader on CUDA: no host sync
            target = labels if views == 1 else labels.repeat_interleave(views)
            if self.mixing is not None:
                clips, target = self.mixing(clips, target)  # soft targets (B, K)
            if t.channels_last:
                clips = clips.contiguous(memory_format=torch.channels_last_3d)
            self.iteration += 1
            last = self.iteration == self.iters_per_epoch
            stepping = self.iteration % t.accumulate == 0 or last
            # gradients are all-reduced on the micro-step that steps, not on the ones before it
            sync = nullcontext() if stepping or self.world == 1 else self.ddp.no_sync()
            with sync:
                with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                    loss = self.criterion(self.ddp(clips).float(), target)
                (self.scaler.scale(loss / t.accumulate) if self.scaler else loss / t.accumulate).backward()
            if stepping:
                self._step()
            window += torch.stack([loss.detach(), torch.ones_like(loss)])
            seen += len(target)
            if self.iteration % t.log_every == 0 or last:
                self._rewind_skipped_steps()
                summed = all_reduce_sum(window)  # the loss of the global batches since the last log
                total += summed
                global_loss = (summed[0] / summed[1]).item()
                window.zero_()
                rate = seen * self.world / (time.perf_counter() - tick)
                lr = self.optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{global_loss:.3f}", lr=f"{lr:.2e}", clips_s=f"{rate:.1f}")
                skipped = {"skipped_steps": self.nonfinite_steps} if self.nonfinite_steps else {}
                self._log({"type": "train", "epoch": epoch, "iteration": self.iteration, "loss": global_loss,
                           "lr": lr, "clips_per_s": rate, **skipped})  # fmt: skip
            boundary = self.iteration % t.accumulate == 0  # no gradients held: a checkpoint can be taken here
            saved = bool(boundary and t.checkpoint_every and self.iteration % t.checkpoint_every == 0)
            if saved:
                self._save("latest.pt")
            if self.on_iteration is not None:
                self.on_iteration(epoch, self.iteration)
            if boundary and not last:  # the epoch's end is a boundary of its own (saved, validated, then checked)
                self._stop_if_asked(stop, saved)
        bar.close()
        self.epoch_failures = sum(all_gather_objects(self.train_set.failures))  # every process's, not rank 0's
        if self.epoch_failures:
            log.warning("epoch %d: %d of its %d videos failed to load and were replaced (data.on_error)", epoch + 1,
                        self.epoch_failures, self.sampler.steps * self.sampler.global_batch)  # fmt: skip
        loss = (total[0] / total[1]).item() if total[1] > 0 else float("nan")
        window.zero_()
        total.zero_()
        return loss

    def _step(self) -> None:
        """Clip, step, advance the schedule and the weight average. GradScaler (fp16) skips steps
        with inf/NaN gradients and lowers its scale; the skips are counted on the device (no host
        synchronisation per step) and the schedule is moved back by them at the next log
        (:meth:`_rewind_skipped_steps`), so it advances only with real steps."""
        clip = self.cfg.optim.clip_grad
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if clip:
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if not self.scaler and not self._finite_gradients(norm if clip else None):
            return
        if self.scaler:
            scale = self.scaler._scale.clone()  # a device tensor; get_scale() would wait for the GPU
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.skipped_steps += (self.scaler._scale < scale).long().squeeze()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # a skipped first step: taken back by _rewind_skipped_steps
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before", UserWarning)
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)

    def _finite_gradients(self, norm: torch.Tensor | None) -> bool:
        """Whether the gradients (their total ``norm``, computed here when not given) are finite;
        a step with non-finite ones is skipped (not taken, not counted by the schedule) and
        counted, and :data:`train.max_nonfinite_steps` of them in a row stop the run with
        :class:`NonFiniteLoss`. One host read per step, as GradScaler's own check makes; the
        gradients are all-reduced, so every rank decides alike."""
        if norm is None:
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else torch.zeros(())
        if bool(torch.isfinite(norm)):
            self.nonfinite_in_row = 0
            return True
        self.optimizer.zero_grad(set_to_none=True)
        self.nonfinite_steps += 1
        self.nonfinite_in_row += 1
        limit = self.cfg.train.max_nonfinite_steps
        if is_main():
            log.warning("epoch %d, iteration %d: non-finite gradients, step skipped (%d in a row, the run stops at %d)",
                        self.epoch + 1, self.iteration, self.nonfinite_in_row, limit)  # fmt: skip
        if self.nonfinite_in_row >= limit:
            raise NonFiniteLoss(
                f"the loss or its gradients were not finite for {limit} optimiser steps in a row (epoch "
                f"{self.epoch + 1}, iteration {self.iteration}; {self.nonfinite_steps} skipped in all): the run stops. "
                f"Lower optim.lr (now {self.cfg.optim.lr:g}), set optim.clip_grad, or check the data; "
                f"train.max_nonfinite_steps={limit} sets how many are skipped in a row"
            )
        return False

    def _rewind_skipped_steps(self) -> None:
        """Take the skipped optimiser steps since the last call out of the schedule (one host read)."""
        if self.scaler is None:
            return
        skipped = int(self.skipped_steps.item())
        if skipped:
            self.skipped_steps.zero_()
            s = self.scheduler
            s.last_epoch -= skipped
            for group, base, factor in zip(self.optimizer.param_groups, s.base_lrs, s.lr_lambdas, strict=True):
                group["lr"] = base * factor(s.last_epoch)
            s._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def validate(self, model: nn.Module | None = None, stop: StopSignals | None = None) -> EvalResult | None:
        """Evaluate ``model`` (default: the trained one) on ``data.val_annotation`` with the
        validation views (``data.val_clips`` x ``data.val_crops``; the test protocol is ``seqctx
        test``'s), every process its share of the videos (unreadable videos left out and
        reported); every process gets the merged result. A stop signal (``stop``) ends it early:
        the result is then not ``complete``."""
        if self.val_set is None:
            return None
        self.val_set.reset_failures()
        d = self.cfg.data
        stopped = (lambda: stop.received is not None) if stop is not None else None
        result = evaluate_dataset(model or self.model, self.cfg, self.val_set, self.device, d.val_clips * d.val_crops,
                                  self.progress, stopped=stopped)  # fmt: skip
        if result.complete and result.unreadable and is_main():
            log.warning("validation: %s", result.summary())
        return result

    def _validation_due(self, epoch: int) -> bool:
        return self.val_set is not None and (epoch % self.cfg.train.eval_every == 0 or epoch == self.cfg.train.epochs)

    def _validate_epoch(self, stop: StopSignals) -> dict[str, float]:
        """The validation finished epoch ``epoch`` is due: its ``val`` line, ``best.pt`` when it
        improves, then ``latest.pt`` saying it was validated. A stop signal during it ends the run
        (:class:`Preempted`) with ``latest.pt`` as it was saved before: validation is redone on
        resume."""
        result = self.validate(stop=stop)
        assert result is not None
        metrics = result.metrics()
        if self.ema is not None and result.complete:  # the average of the weights, evaluated alike
            ema = self.validate(self.ema.module, stop=stop)
            assert ema is not None
            metrics.update({f"ema_{k}": v for k, v in ema.metrics().items()})
            result.complete = ema.complete
        name = stop.agreed()
        if name is not None or not result.complete:
            raise Preempted(name or "a stop signal", self.epoch - 1, self.iters_per_epoch,
                            str(self.work_dir / "latest.pt"), "validation, redone on resume")  # fmt: skip
        self._log({"type": "val", "epoch": self.epoch, **metrics, "num_videos": result.num_videos,
                   "unreadable": [vid for vid, _ in result.unreadable]})  # fmt: skip
        self.validated = True
        if result.top1 > self.best_top1:
            self.best_top1 = result.top1
            self._save("best.pt")
        self._save("latest.pt")  # validated, with the best top-1
        return metrics

    def fit(self) -> dict[str, float]:
        """Train to ``cfg.train.epochs``; returns the last validation metrics (and the train loss).
        Releases the work folder's lock when it returns or raises."""
        try:
            with StopSignals(self.cfg.train.stop_signals, self.stop_group) as stop:
                return self._fit(stop)
        finally:
            self._lock.release()

    def _fit(self, stop: StopSignals) -> dict[str, float]:
        """Epochs, each: train, log, save ``latest.pt`` (its validation owed, when due), validate
        (:meth:`_validate_epoch`). Stop signals are acted on at every iteration boundary, after the
        epoch's save and after validation."""
        t = self.cfg.train
        metrics: dict[str, float] = {} if self.train_loss is None else {"train_loss": self.train_loss}
        while True:
            if not self.validated:  # also the owed validation of the epoch a resumed run stopped in
                metrics.update(self._validate_epoch(stop))
            barrier()
            if self.epoch >= t.epochs:
                break
            if self.iteration == 0:
                self._stop_if_asked(stop, saved=True, phase="between epochs")
            self.train_loss = self._train_epoch(stop)
            self.epoch, self.iteration = self.epoch + 1, 0
            metrics = {"train_loss": self.train_loss}
            self._log({"type": "epoch", "epoch": self.epoch, "train_loss": self.train_loss,
                       "failures": self.epoch_failures})  # fmt: skip
            self.validated = not self._validation_due(self.epoch)
            self._save("latest.pt")  # the epoch is kept; its validation, when due, is still owed
            if not self.validated:
                self._stop_if_asked(stop, saved=True, phase="before validation, which is redone on resume")
        if is_main():
            from .plots import plot_metrics

            plot_metrics(self.work_dir / "metrics.jsonl", self.work_dir)
        return metrics

    def close(self) -> None:
        """Close the TensorBoard writer, end the process group (torchrun) and restore the thread
        count and RNG states."""
        if self.tensorboard is not None:
            self.tensorboard.close()
        self._lock.release()
        cleanup()
        self._restore_process_state()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
