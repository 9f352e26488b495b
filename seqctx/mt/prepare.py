"""Data preparation: the steps of fairseq's ``examples/translation/prepare-iwslt14.sh`` in Python
(sacremoses for Moses tokenisation, subword-nmt for BPE), and the same pipeline for Multi30K."""

from __future__ import annotations

import gzip
import io
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from seqctx.errors import DataError

LANGS = ("de", "en")
SPLITS = ("train", "valid", "test")
IWSLT_TEST_SETS = ("IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010", "IWSLT14.TED.tst2011",
                   "IWSLT14.TED.tst2012")  # fmt: skip
_META = ("<url>", "<talkid>", "<keywords>", "<speaker>", "<reviewer", "<translator", "<doc", "</doc>")
_STRIP = re.compile(r"</?(title|description)>")
_SEG = re.compile(r'^\s*<seg id="?\d+"?>\s*(.*?)\s*</seg>\s*$')


class Corpus:
    """Files of an IWSLT'14 release: a ``de-en.tgz`` archive or the folder it extracts to."""

    def __init__(self, source: str | Path) -> None:
        self.source = Path(source)
        if not self.source.exists():
            raise DataError(f"{source}: no such archive or folder")
        self._tar = tarfile.open(self.source) if self.source.is_file() else None

    def read(self, name: str) -> list[str]:
        if self._tar is not None:
            member = next((m for m in self._tar.getmembers() if Path(m.name).name == name), None)
            if member is None:
                raise DataError(f"{self.source}: no file named {name} in the archive")
            return io.TextIOWrapper(self._tar.extractfile(member), encoding="utf-8").read().splitlines()
        matches = sorted(self.source.rglob(name))
        if not matches:
            raise DataError(f"{self.source}: no file named {name}")
        return matches[0].read_text(encoding="utf-8").splitlines()


def strip_train_tags(lines: Iterable[str]) -> list[str]:
    """``train.tags.*``: drop the talk metadata lines, keep title/description text."""
    return [_STRIP.sub("", line) for line in lines if not any(tag in line for tag in _META)]


def extract_segments(lines: Iterable[str]) -> list[str]:
    """The ``<seg id="N">...</seg>`` sentences of a dev/test XML file, as released (the raw
    references SacreBLEU scores against)."""
    return [m.group(1) for m in map(_SEG.match, lines) if m]


def plain_apostrophes(lines: Iterable[str]) -> list[str]:
    """Curly apostrophes made plain, as ``prepare-iwslt14.sh`` does before tokenising test sets."""
    return [line.replace("\u2019", "'") for line in lines]


def tokenize(lines: Iterable[str], lang: str, lowercase: bool = True, desc: str = "") -> list[str]:
    """Moses tokenisation (``tokenizer.perl -l LANG``: escaped, no aggressive dash split), then
    lowercasing."""
    from sacremoses import MosesTokenizer

    tok = MosesTokenizer(lang=lang)
    lines = list(lines)
    out = []
    for line in tqdm(lines, desc=desc or f"tokenising {lang}", leave=False, disable=len(lines) < 5000):
        t = tok.tokenize(line.strip(), escape=True, return_str=True)
        out.append(t.lower() if lowercase else t)
    return out


def clean_pairs(
    src: list[str], tgt: list[str], min_len: int = 1, max_len: int = 175, ratio: float = 1.5
) -> tuple[list[str], list[str]]:
    """``clean-corpus-n.perl -ratio 1.5 ... 1 175``: keep pairs with 1-175 tokens on both sides and
    a length ratio of at most 1.5."""
    keep_s, keep_t = [], []
    for s, t in zip(src, tgt, strict=True):
        s, t = " ".join(s.split()), " ".join(t.split())
        ns, nt = len(s.split()), len(t.split())
        if not (min_len <= ns <= max_len and min_len <= nt <= max_len):
            continue
        if ns / nt > ratio or nt / ns > ratio:
            continue
        keep_s.append(s)
        keep_t.append(t)
    return keep_s, keep_t


def learn_joint_bpe(texts: Iterable[list[str]], merges: int, codes: Path) -> None:
    from subword_nmt.learn_bpe import learn_bpe

    joined = [line for text in texts for line in text]
    with open(codes, "w", encoding="utf-8") as out:
        learn_bpe(io.StringIO("\n".join(joined) + "\n"), out, merges, verbose=False)


def apply_bpe(lines: Iterable[str], codes: Path) -> list[str]:
    from subword_nmt.apply_bpe import BPE

    with open(codes, encoding="utf-8") as f:
        bpe = BPE(f)
    return [bpe.process_line(line) for line in lines]


def write_lines(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def binarize(text_dir: Path, dest: Path, workers: int = 1, joined_dictionary: bool = False) -> None:
    """``fairseq-preprocess`` on ``text_dir/{train,valid,test}.{de,en}``."""
    cmd = [sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", "de", "--target-lang", "en",
           "--trainpref", str(text_dir / "train"), "--validpref", str(text_dir / "valid"),
           "--testpref", str(text_dir / "test"), "--destdir", str(dest), "--workers", str(workers)]  # fmt: skip
    if joined_dictionary:
        cmd.append("--joined-dictionary")
    subprocess.run(cmd, check=True)


def prepared_folder(folder: Path) -> str | None:
    """What a folder that ``prepare-iwslt14.sh`` (or this module) left holds: ``"bpe"`` when its
    ``{train,valid,test}.{de,en}`` are BPE-split (a ``code`` file beside them, or ``@@``
    continuation marks in the first lines of ``train.en``), ``"tok"`` when only tokenised, None
    when it has not all six files."""
    files = [folder / f"{split}.{lang}" for split in SPLITS for lang in LANGS]
    if not folder.is_dir() or not all(p.is_file() for p in files):
        return None
    if (folder / "code").is_file():
        return "bpe"
    with open(folder / "train.en", encoding="utf-8") as f:
        head = [line for line, _ in zip(f, range(1000), strict=False)]
    return "bpe" if any("@@ " in line for line in head) else "tok"


def _finish(
    out: Path, splits: dict[str, dict[str, list[str]]], merges: int, do_binarize: bool, workers: int,
    raw_test: dict[str, list[str]] | None = None,
) -> Path:  # fmt: skip
    """Write ``OUT/tok``, learn and apply the joint BPE, binarise; ``raw_test`` (untokenised,
    original-case test sentences by language, in test-set order) goes to ``OUT/raw/test.LANG``,
    the references SacreBLEU scores against (:mod:`seqctx.mt.score`)."""
    for lang, lines in (raw_test or {}).items():
        write_lines(out / "raw" / f"test.{lang}", lines)
    tok_dir = out / "tok"
    for split, by_lang in splits.items():
        for lang, lines in by_lang.items():
            write_lines(tok_dir / f"{split}.{lang}", lines)
    codes = out / "code"
    learn_joint_bpe([splits["train"][lang] for lang in LANGS], merges, codes)
    for split, by_lang in tqdm(list(splits.items()), desc="applying BPE", leave=False):
        for lang, lines in by_lang.items():
            write_lines(out / f"{split}.{lang}", apply_bpe(lines, codes))
    if do_binarize:
        binarize(out, out / "data-bin", workers)
    return out


def prepare_iwslt14(
    source: str | Path, out: str | Path, merges: int = 10000, do_binarize: bool = True, workers: int = 1
) -> Path:
    """IWSLT'14 De-En as ``prepare-iwslt14.sh``: train from ``train.tags`` (cleaned to 1-175
    tokens, ratio 1.5, lowercased), valid = every 23rd training pair, test = dev2010 +
    TEDX.dev2012 + tst2010 + tst2011 + tst2012, joint BPE, then ``fairseq-preprocess``.
    Writes ``OUT/tok/*`` (tokenised), ``OUT/{train,valid,test}.{de,en}`` (BPE), ``OUT/code``,
    ``OUT/data-bin`` and, from a release, ``OUT/raw/test.{de,en}`` (the test sets' sentences as
    released: SacreBLEU's references).

    ``source`` may also be a folder that is already prepared (what ``prepare-iwslt14.sh`` leaves:
    ``{train,valid,test}.{de,en}``): BPE-split files are binarised as they are; tokenised ones get
    the joint BPE first."""
    out, kind = Path(out), prepared_folder(Path(source))
    if kind == "bpe":
        if do_binarize:
            binarize(Path(source), out / "data-bin", workers)
        return out
    if kind == "tok":
        splits = {split: {lang: (Path(source) / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()
                          for lang in LANGS} for split in SPLITS}  # fmt: skip
        return _finish(out, splits, merges, do_binarize, workers)
    corpus = Corpus(source)
    raw = {lang: strip_train_tags(corpus.read(f"train.tags.de-en.{lang}")) for lang in LANGS}
    tok = {lang: tokenize(raw[lang], lang, lowercase=False) for lang in LANGS}
    src, tgt = clean_pairs(tok["de"], tok["en"])
    train_all = {"de": [s.lower() for s in src], "en": [t.lower() for t in tgt]}
    splits = {
        "train": {lang: [x for i, x in enumerate(train_all[lang], 1) if i % 23] for lang in LANGS},
        "valid": {lang: [x for i, x in enumerate(train_all[lang], 1) if i % 23 == 0] for lang in LANGS},
        "test": {lang: [] for lang in LANGS},
    }
    raw_test: dict[str, list[str]] = {lang: [] for lang in LANGS}
    for name in IWSLT_TEST_SETS:
        for lang in LANGS:
            raw_test[lang] += extract_segments(corpus.read(f"{name}.de-en.{lang}.xml"))
    splits["test"] = {lang: tokenize(plain_apostrophes(raw_test[lang]), lang) for lang in LANGS}
    return _finish(out, splits, merges, do_binarize, workers, raw_test)


def _read_gz_or_text(folder: Path, stem: str) -> list[str]:
    for path in (folder / f"{stem}.gz", folder / stem):
        if path.is_file():
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as f:
                return f.read().splitlines()
    raise DataError(f"{folder}: neither {stem}.gz nor {stem}")


def prepare_multi30k(
    source: str | Path, out: str | Path, merges: int = 10000, do_binarize: bool = True, workers: int = 1
) -> Path:
    """Multi30K De-En (task 1, raw ``train``/``val``/``test_2016_flickr`` files, gzipped or not):
    Moses tokenisation, lowercasing, joint BPE, ``fairseq-preprocess``; the raw test files are
    kept as ``OUT/raw/test.{de,en}`` (SacreBLEU's references)."""
    folder, out = Path(source), Path(out)
    names = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
    raw = {split: {lang: _read_gz_or_text(folder, f"{stem}.{lang}") for lang in LANGS} for split, stem in names.items()}
    splits = {split: {lang: tokenize(lines, lang) for lang, lines in by_lang.items()} for split, by_lang in raw.items()}
    return _finish(out, splits, merges, do_binarize, workers, raw["test"])
