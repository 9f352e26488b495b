"""Training recipes: ``mt_configs/*.yaml`` -> fairseq command lines, and checkpoint averaging.

A recipe holds ``data`` (a fairseq data-bin folder), ``arch``, a ``train`` mapping of
fairseq-train options (``key: value``; ``true`` for a bare flag, ``false``/``null`` to omit),
``average_last`` (saved states to average), a ``generate`` mapping of fairseq-generate options,
``ref_raw`` (the test set's raw references for SacreBLEU, as ``prepare-iwslt14`` writes them to
``OUT/raw/test.en``; null to score against the tokenised references) and the world size:
``paper_gpus`` (the GPUs the recipe's batch was set for) and ``gpus`` (the
ones to use; default ``paper_gpus``). The command states ``--distributed-world-size gpus`` and
scales ``--update-freq`` so that an update holds the paper's tokens whatever the GPU count
(fairseq alone would use every visible GPU: 8x the tokens on 8 GPUs).
Unknown recipe keys fail at load; unknown fairseq options fail before fairseq starts, with
fairseq's own parser as the judge.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from seqctx.errors import ConfigError, UserError
from seqctx.overrides import apply_overrides, parse_override
from seqctx.safe_yaml import load_yaml

from . import user_dir

SCALAR_KEYS = ("data", "arch", "save_dir", "average_last", "ref_raw", "paper_gpus", "gpus")
OPTION_SECTIONS = ("train", "generate")  # fairseq-train / fairseq-generate options
RECIPE_KEYS = {*SCALAR_KEYS, *OPTION_SECTIONS}
log = logging.getLogger(__name__)

_VALID = (
    "top-level data, arch, save_dir, average_last, ref_raw, paper_gpus, gpus; or train.OPTION / generate.OPTION "
    "(fairseq options)"
)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """A recipe (safe YAML) with ``key=value`` / ``train.OPTION=value`` / ``generate.OPTION=value``
    overrides; an unknown key or section raises :class:`ConfigError` naming the valid ones."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} not found")
    recipe = load_yaml(path) or {}
    unknown = set(recipe) - RECIPE_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown recipe key {sorted(unknown)[0]!r}; valid keys: {_VALID}")
    for item in overrides or []:
        path, _ = parse_override(item)
        known = path[0] in OPTION_SECTIONS if len(path) == 2 else len(path) == 1 and path[0] in SCALAR_KEYS
        if not known:
            raise ConfigError(f"--set {'.'.join(path)}: unknown recipe key {path[0]!r}; valid: {_VALID}")
    apply_overrides(recipe, list(overrides or []))
    for key in ("data", "arch"):
        if key not in recipe:
            raise ConfigError(f"{path}: a recipe needs {key!r}")
    return recipe


def check_options(cmd: list[str]) -> None:
    """Parse a fairseq-train or fairseq-generate command line with fairseq's own parser (the
    model's and task's options included); an option it does not know raises :class:`ConfigError`
    naming it and the closest valid ones. The ``--user-dir`` plugin is registered by importing
    :mod:`seqctx.mt.models`, not the plugin folder, so this process's torch stays as it was."""
    logging.getLogger("fairseq").setLevel(logging.WARNING)  # its import-time notes are not this command's output
    from fairseq import options

    from . import models  # noqa: F401  registers lightconv_cgc

    args = list(cmd[1:])
    if "--user-dir" in args:  # seqctx's plugin folder: registered by the import above
        at = args.index("--user-dir")
        del args[at : at + 2]
    parser = options.get_training_parser() if cmd[0] == "fairseq-train" else options.get_generation_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            options.parse_args_and_arch(parser, input_args=args)
    except SystemExit:
        message = err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "invalid arguments"
        known = [o for a in parser._actions for o in a.option_strings]
        bad = [w for w in message.split() if w.startswith("--")]
        hints = {b: difflib.get_close_matches(b, known, n=3) for b in bad}
        hint = "; ".join(f"{b}: did you mean {', '.join(h)}?" for b, h in hints.items() if h)
        raise ConfigError(
            f"{cmd[0]} rejects the recipe's options: {message}" + (f" ({hint})" if hint else "")
        ) from None


def _flags(options: dict[str, Any]) -> list[str]:
    out = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        out.append(f"--{key}")
        if value is not True:
            out.append(str(value))
    return out


def world_options(recipe: dict[str, Any]) -> list[str]:
    """``--distributed-world-size GPUS --update-freq F`` with ``GPUS * F`` = the paper's
    ``paper_gpus * update-freq``: the same tokens per update on any number of GPUs."""
    options = recipe.get("train", {})
    if "distributed-world-size" in options:
        raise ConfigError("set the recipe's gpus (and paper_gpus), not train.distributed-world-size")
    paper, freq = int(recipe.get("paper_gpus", 1)), int(options.get("update-freq", 1))
    gpus = int(recipe.get("gpus", paper))
    if gpus < 1 or paper < 1 or (paper * freq) % gpus:
        raise ConfigError(
            f"gpus={gpus} cannot keep the recipe's tokens per update: paper_gpus={paper} x update-freq={freq} "
            f"= {paper * freq} must be a multiple of gpus (use a divisor of {paper * freq})"
        )
    return ["--distributed-world-size", str(gpus), "--update-freq", str(paper * freq // gpus)]


def train_command(recipe: dict[str, Any]) -> list[str]:
    save_dir = recipe.get("save_dir", "checkpoints")
    options = {k: v for k, v in recipe.get("train", {}).items() if k != "update-freq"}
    return ["fairseq-train", str(recipe["data"]), "--user-dir", str(user_dir()), "--arch", recipe["arch"],
            "--save-dir", str(save_dir), *world_options(recipe), *_flags(options)]  # fmt: skip


def generate_command(recipe: dict[str, Any], checkpoint: str | Path) -> list[str]:
    return ["fairseq-generate", str(recipe["data"]), "--user-dir", str(user_dir()), "--path", str(checkpoint),
            *_flags(recipe.get("generate", {}))]  # fmt: skip


def run(cmd: list[str], stdout: Path | None = None, log_file: Path | None = None) -> None:
    """Run a printed fairseq command with the console scripts of this interpreter's environment;
    ``stdout`` and ``log_file`` (its stderr: fairseq's log and config dump) catch its output."""
    script = Path(sys.executable).parent / cmd[0]
    argv = [str(script) if script.exists() else cmd[0], *cmd[1:]]
    with contextlib.ExitStack() as files:
        out = files.enter_context(open(stdout, "w")) if stdout else None
        err = files.enter_context(open(log_file, "w")) if log_file else None
        done = subprocess.run(argv, stdout=out, stderr=err)
    if done.returncode:
        if log_file is None:
            raise UserError(f"{cmd[0]} exited with code {done.returncode} (its messages are above)")
        last = next((line for line in reversed(log_file.read_text().splitlines()) if line.strip()), "")
        raise UserError(f"{cmd[0]} exited with code {done.returncode}: {last.strip()} (its log: {log_file})")


def format_command(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def checkpoint_updates(path: Path) -> int:
    """The number of updates a fairseq checkpoint was saved at (``optimizer_history[-1]``); the
    file is memory-mapped, not read whole."""
    from .safe_load import fairseq_checkpoints

    with fairseq_checkpoints():
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    try:
        return int(state["optimizer_history"][-1]["num_updates"])
    except (KeyError, IndexError, TypeError):
        raise ConfigError(f"{path} is not a fairseq training checkpoint (no optimizer_history)") from None


def last_checkpoints(save_dir: str | Path, n: int) -> list[tuple[Path, int]]:
    """The last ``n`` states saved in ``save_dir``, by update count (what fairseq's
    ``average_checkpoints.py --num-update-checkpoints`` orders by), as ``(path, updates)``:
    ``checkpoint{epoch}.pt``, ``checkpoint_{epoch}_{update}.pt`` and ``checkpoint_last.pt`` (the
    final state) count; ``checkpoint_best.pt`` and averages do not; a state saved under two names
    counts once (the numbered name)."""
    save_dir = Path(save_dir)
    paths = [p for p in sorted(save_dir.glob("checkpoint*.pt"))
             if p.name != "checkpoint_avg.pt" and "best" not in p.name]  # fmt: skip
    if not paths:
        raise ConfigError(f"no fairseq checkpoints in {save_dir} (train first: seqctx mt train RECIPE)")
    by_update: dict[int, Path] = {}
    for path in sorted(paths, key=lambda p: p.name == "checkpoint_last.pt"):  # numbered names first
        by_update.setdefault(checkpoint_updates(path), path)
    return [(by_update[u], u) for u in sorted(by_update)[-n:]]


def average_checkpoints(paths: list[Path], out: str | Path) -> Path:
    """Average the model parameters of fairseq checkpoints (the last one's other fields are kept),
    loading each with ``weights_only=True``."""
    from .safe_load import fairseq_checkpoints

    if not paths:
        raise ValueError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    state: dict[str, Any] = {}
    with fairseq_checkpoints():
        for path in paths:
            state = torch.load(path, map_location="cpu", weights_only=True)
            for k, v in state["model"].items():
                total[k] = total.get(k, 0) + v.double() if v.is_floating_point() else v
    state["model"] = {
        k: (v / len(paths)).to(state["model"][k].dtype) if v.is_floating_point() else v for k, v in total.items()
    }
    torch.save(state, out)
    return Path(out)


def train(recipe: dict[str, Any], dry_run: bool = False) -> None:
    """Log the fairseq-train command of a recipe, check its options and run it. A ``save_dir``
    holding ``checkpoint_last.pt`` is continued from it (fairseq's own resume: model, optimiser,
    schedule, data position), and the log says so; fairseq writes its checkpoints atomically (a
    temporary file renamed), and a stopped or preempted fairseq-train loses the updates since its
    last save (each epoch, or ``train.save-interval-updates``)."""
    cmd = train_command(recipe)
    log.info(format_command(cmd))
    check_options(cmd)
    last = Path(recipe.get("save_dir", "checkpoints")) / "checkpoint_last.pt"
    if last.is_file() and "restore-file" not in recipe.get("train", {}):
        try:
            updates = checkpoint_updates(last)
        except Exception as e:  # what fairseq would fail on after its start-up, said before it
            raise ConfigError(
                f"{last} is not a readable fairseq checkpoint ({e}); fairseq-train would resume from it: move it "
                "aside, or resume from a numbered one with --set train.restore-file=PATH"
            ) from None
        log.info("continuing from %s (%d updates): fairseq-train resumes from it; another save_dir starts afresh",
                 last, updates)  # fmt: skip
    if not dry_run:
        run(cmd)


def raw_references(recipe: dict[str, Any]) -> Path | None:
    """The recipe's ``ref_raw`` file (None when unset); a path that does not exist is a
    :class:`ConfigError` saying how to make it or do without it."""
    if not recipe.get("ref_raw"):
        return None
    path = Path(recipe["ref_raw"])
    if not path.is_file():
        raise ConfigError(
            f"ref_raw {path} not found: `seqctx mt prepare-iwslt14` writes OUT/raw/test.en from a raw release "
            "(IWSLT'14 archive, Multi30K raw files); for data prepared from tokenised text, --set ref_raw=null "
            "scores SacreBLEU against the tokenised references (and says so)"
        )
    return path


def evaluate(recipe: dict[str, Any], dry_run: bool = False) -> str | None:
    """Average the last ``average_last`` saved states (by update count), fairseq-generate the
    test set into ``SAVE_DIR/generate-test.txt`` (its log and config dump into
    ``SAVE_DIR/generate-test.log``) and return both BLEU scores (against ``ref_raw`` for
    SacreBLEU) and where the files are, as text (each step logged first, the averaged files by
    name); None with ``dry_run``."""
    from .score import score_files

    save_dir = Path(recipe.get("save_dir", "checkpoints"))
    checkpoint = save_dir / "checkpoint_avg.pt"
    output, log_file = save_dir / "generate-test.txt", save_dir / "generate-test.log"
    cmd = generate_command(recipe, checkpoint)
    n = recipe.get("average_last", 1)
    ref_raw = None if dry_run else raw_references(recipe)  # like `data`, looked for when it is used
    log.info("average the last %d saved states of %s (by update count) -> %s", n, save_dir, checkpoint)
    check_options(cmd)
    if not dry_run:
        chosen = last_checkpoints(save_dir, n)
        if len(chosen) < n:
            log.info("only %d distinct saved states in %s; averaging those", len(chosen), save_dir)
        for path, updates in chosen:
            log.info("  %s  (%d updates)", path.name, updates)
        average_checkpoints([path for path, _ in chosen], checkpoint)
    log.info("%s > %s 2> %s", format_command(cmd), output, log_file)
    if dry_run:
        return None
    run(cmd, stdout=output, log_file=log_file)
    report = score_files(output, ref_raw=ref_raw)
    return f"{report}\ntranslations: {output}\nfairseq-generate's log: {log_file}\naveraged model: {checkpoint}"
