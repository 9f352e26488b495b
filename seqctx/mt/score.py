"""BLEU as the papers report it, and SacreBLEU, from fairseq-generate output or text files.

* tokenised BLEU (the LightConv/CGC tables): BPE removed, lowercased, Moses-tokenised text,
  ``sacrebleu.corpus_bleu(..., tokenize="none")``, i.e. ``multi-bleu.perl`` on tokens;
* detokenised SacreBLEU with its signature (Moses-detokenised text, sacrebleu's defaults).

``fairseq-score --sacrebleu`` crashes with sacrebleu 2.x and ``fairseq-generate --scoring
sacrebleu`` tokenises with 13a, not the papers' protocol; this module is the replacement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(r"^([HT])-(\d+)\t(.*)$")


@dataclass
class BleuReport:
    tokenized_bleu: float
    sacrebleu: float
    signature: str
    sentences: int
    details: str

    def __str__(self) -> str:
        return (
            f"{self.sentences} sentences\n"
            f"tokenised BLEU (lowercased, BPE removed, tokenize='none'): {self.tokenized_bleu:.2f}  [{self.details}]\n"
            f"detokenised SacreBLEU: {self.sacrebleu:.2f}  {self.signature}"
        )


def remove_bpe(line: str) -> str:
    return (line + " ").replace("@@ ", "").rstrip()


def read_generate_output(path: str | Path) -> tuple[list[str], list[str]]:
    """Hypotheses (``H-id``) and references (``T-id``) of fairseq-generate's output, by id."""
    hyps: dict[int, str] = {}
    refs: dict[int, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        kind, idx, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "H":
            hyps[idx] = rest.split("\t", 1)[1] if "\t" in rest else ""
        else:
            refs[idx] = rest
    if not hyps or set(hyps) != set(refs):
        raise ValueError(f"{path}: expected matching H-<id> and T-<id> lines, found {len(hyps)} H and {len(refs)} T")
    ids = sorted(hyps)
    return [hyps[i] for i in ids], [refs[i] for i in ids]


def score(hyps: list[str], refs: list[str], lang: str = "en", tokenized: bool = True) -> BleuReport:
    """Both BLEUs. ``tokenized``: the inputs are Moses-tokenised (as fairseq data is); otherwise
    they are plain text, tokenised here for the tokenised BLEU."""
    import sacrebleu
    from sacremoses import MosesDetokenizer, MosesTokenizer

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    hyps, refs = [remove_bpe(h) for h in hyps], [remove_bpe(r) for r in refs]
    if tokenized:
        tok_h, tok_r = hyps, refs
        detok = MosesDetokenizer(lang=lang)
        plain_h = [detok.detokenize(h.split()) for h in hyps]
        plain_r = [detok.detokenize(r.split()) for r in refs]
    else:
        tok = MosesTokenizer(lang=lang)
        tok_h = [tok.tokenize(h, escape=True, return_str=True) for h in hyps]
        tok_r = [tok.tokenize(r, escape=True, return_str=True) for r in refs]
        plain_h, plain_r = hyps, refs
    tok_bleu = sacrebleu.corpus_bleu(
        [h.lower() for h in tok_h],
        [[r.lower() for r in tok_r]],
        tokenize="none",
        force=True,  # tokenised on purpose
    )
    metric = sacrebleu.BLEU()
    detok_bleu = metric.corpus_score(plain_h, [plain_r])
    ratio = tok_bleu.sys_len / max(1, tok_bleu.ref_len)
    details = f"{'/'.join(f'{p:.1f}' for p in tok_bleu.precisions)} BP={tok_bleu.bp:.3f} ratio={ratio:.3f}"
    return BleuReport(tok_bleu.score, detok_bleu.score, str(metric.get_signature()), len(hyps), details)


def score_files(generate_output: str | Path | None = None, hyp: str | Path | None = None, ref: str | Path | None = None,
                lang: str = "en", tokenized: bool = True) -> BleuReport:  # fmt: skip
    """``score`` on fairseq-generate output, or on a hypothesis and a reference file."""
    if generate_output is not None:
        hyps, refs = read_generate_output(generate_output)
    elif hyp is not None and ref is not None:
        hyps = Path(hyp).read_text(encoding="utf-8").splitlines()
        refs = Path(ref).read_text(encoding="utf-8").splitlines()
    else:
        raise ValueError("give --generate-output, or both --hyp and --ref")
    return score(hyps, refs, lang, tokenized)
