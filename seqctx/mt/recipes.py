"""Training recipes: ``mt_configs/*.yaml`` -> fairseq command lines, and checkpoint averaging.

A recipe holds ``data`` (a fairseq data-bin folder), ``arch``, a ``train`` mapping of
fairseq-train options (``key: value``; ``true`` for a bare flag, ``false``/``null`` to omit),
``average_last`` (checkpoints to average) and a ``generate`` mapping of fairseq-generate options.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from . import user_dir

RECIPE_KEYS = {"data", "arch", "save_dir", "train", "average_last", "generate"}


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """A recipe (safe YAML) with ``section.key=value`` overrides."""
    recipe = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(recipe) - RECIPE_KEYS
    if unknown:
        raise ValueError(
            f"{path}: unknown recipe key {sorted(unknown)[0]!r}; valid keys: {', '.join(sorted(RECIPE_KEYS))}"
        )
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        section, _, name = key.rpartition(".")
        target = recipe.setdefault(section, {}) if section else recipe
        target[name] = yaml.safe_load(value)
    for key in ("data", "arch"):
        if key not in recipe:
            raise ValueError(f"{path}: a recipe needs {key!r}")
    return recipe


def _flags(options: dict[str, Any]) -> list[str]:
    out = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        out.append(f"--{key}")
        if value is not True:
            out.append(str(value))
    return out


def train_command(recipe: dict[str, Any]) -> list[str]:
    save_dir = recipe.get("save_dir", "checkpoints")
    return ["fairseq-train", str(recipe["data"]), "--user-dir", str(user_dir()), "--arch", recipe["arch"],
            "--save-dir", str(save_dir), *_flags(recipe.get("train", {}))]  # fmt: skip


def generate_command(recipe: dict[str, Any], checkpoint: str | Path) -> list[str]:
    return ["fairseq-generate", str(recipe["data"]), "--user-dir", str(user_dir()), "--path", str(checkpoint),
            *_flags(recipe.get("generate", {}))]  # fmt: skip


def run(cmd: list[str], stdout: Path | None = None) -> None:
    """Run a printed fairseq command with the console scripts of this interpreter's environment."""
    script = Path(sys.executable).parent / cmd[0]
    argv = [str(script) if script.exists() else cmd[0], *cmd[1:]]
    if stdout is None:
        subprocess.run(argv, check=True)
        return
    with open(stdout, "w") as f:
        subprocess.run(argv, check=True, stdout=f)


def format_command(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def last_checkpoints(save_dir: str | Path, n: int) -> list[Path]:
    """The last ``n`` of ``checkpoint{epoch}.pt`` / ``checkpoint_{epoch}_{update}.pt`` by number."""

    def number(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in p.stem.removeprefix("checkpoint").strip("_").split("_") if x.isdigit())

    found = [p for p in Path(save_dir).glob("checkpoint*.pt") if number(p)]
    return sorted(found, key=number)[-n:]


def average_checkpoints(paths: list[Path], out: str | Path) -> Path:
    """Average the model parameters of fairseq checkpoints (the last one's other fields are kept),
    loading each with ``weights_only=True``."""
    from .safe_load import allow_fairseq_checkpoints

    if not paths:
        raise ValueError("no checkpoints to average")
    allow_fairseq_checkpoints()
    total: dict[str, torch.Tensor] = {}
    state: dict[str, Any] = {}
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
    """Print the fairseq-train command of a recipe and run it."""
    cmd = train_command(recipe)
    print(format_command(cmd), flush=True)
    if not dry_run:
        run(cmd)


def evaluate(recipe: dict[str, Any], dry_run: bool = False) -> None:
    """Average the last ``average_last`` checkpoints, fairseq-generate the test set into
    ``SAVE_DIR/generate-test.txt`` and print both BLEU scores (each step printed first)."""
    from .score import score_files

    save_dir = Path(recipe.get("save_dir", "checkpoints"))
    checkpoint = save_dir / "checkpoint_avg.pt"
    output = save_dir / "generate-test.txt"
    cmd = generate_command(recipe, checkpoint)
    n = recipe.get("average_last", 1)
    print(f"average the last {n} checkpoints of {save_dir} -> {checkpoint}")
    print(format_command(cmd) + f" > {output}", flush=True)
    if dry_run:
        return
    average_checkpoints(last_checkpoints(save_dir, n), checkpoint)
    run(cmd, stdout=output)
    print(score_files(output))
