"""BLEU from fairseq-generate output or text files: the papers' tokenised BLEU and SacreBLEU.

* **Tokenised BLEU** is fairseq-generate's ``BLEU4`` line (``fairseq.scoring.bleu``), the number
  in LightConv's and CGC's IWSLT'14 tables: BPE removed, the whitespace tokens of the data as they
  are (IWSLT'14 and Multi30K are prepared lowercased and Moses-tokenised), clipped n-gram
  precisions ``p_n`` for n = 1..4 over the corpus, no smoothing::

      BLEU = BP * exp(mean_n log p_n) * 100,   BP = min(1, exp(1 - reflen / syslen))

  so a corpus without a single matching 4-gram scores 0.00, a reference ``<unk>`` matches
  nothing (fairseq maps it to -999 before counting), and an empty line counts as one token (the
  end-of-sentence symbol fairseq's trimming keeps).
* **SacreBLEU** (Post, 2018) on Moses-detokenised hypotheses against the *raw* references
  (untokenised, original case: what ``prepare-iwslt14`` keeps in ``OUT/raw/test.LANG``). The case
  setting follows the data: a model trained on lowercased text is scored case-insensitively
  (``case:lc`` in the signature), a cased one case-sensitively. Without raw references the line
  says that it was computed on references rebuilt from the tokenised test set.

``fairseq-score --sacrebleu`` crashes with sacrebleu 2.x and ``fairseq-generate --scoring
sacrebleu`` scores tokenised, lowercased text as if it were raw; this module is the replacement.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from seqctx.errors import DataError

_LINE = re.compile(r"^([HT])-(\d+)\t(.*)$")
MAX_ORDER = 4
UNK = "<unk>"
_EOS = ("</s>",)  # an empty line's one token (not a string: it equals no word)


@dataclass(frozen=True)
class TokenBleu:
    """fairseq's corpus BLEU statistics: matches and totals per n-gram order, lengths."""

    matches: tuple[int, ...]
    totals: tuple[int, ...]
    syslen: int
    reflen: int

    @property
    def precisions(self) -> list[float]:
        return [m / t if t > 0 else 0.0 for m, t in zip(self.matches, self.totals, strict=True)]

    @property
    def brevity(self) -> float:
        return min(1.0, math.exp(1 - self.reflen / self.syslen)) if self.syslen else 0.0

    @property
    def score(self) -> float:
        logs = [math.log(p) if p > 0 else -math.inf for p in self.precisions]
        return self.brevity * math.exp(sum(logs) / MAX_ORDER) * 100

    def __str__(self) -> str:
        """As fairseq-generate prints it, after ``BLEU4 = ``."""
        p = "/".join(f"{100 * x:.1f}" for x in self.precisions)
        ratio = self.syslen / self.reflen if self.reflen else 0.0
        return (
            f"{self.score:.2f}, {p} (BP={self.brevity:.3f}, ratio={ratio:.3f}, syslen={self.syslen}, "
            f"reflen={self.reflen})"
        )


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def tokenized_bleu(hyps: list[str], refs: list[str]) -> TokenBleu:
    """fairseq-generate's BLEU4 on BPE-free tokenised lines (whitespace tokens, case as given)."""
    matches, totals, syslen, reflen = [0] * MAX_ORDER, [0] * MAX_ORDER, 0, 0
    for hyp, ref in zip(hyps, refs, strict=True):
        h = hyp.split() or [_EOS]
        # a reference <unk> matches nothing
        r = [(UNK, i) if w == UNK else w for i, w in enumerate(ref.split())] or [_EOS]
        syslen, reflen = syslen + len(h), reflen + len(r)
        for n in range(1, MAX_ORDER + 1):
            ref_counts = _ngrams(r, n)
            hyp_counts = _ngrams(h, n)
            totals[n - 1] += sum(hyp_counts.values())
            matches[n - 1] += sum(min(c, ref_counts[g]) for g, c in hyp_counts.items())
    return TokenBleu(tuple(matches), tuple(totals), syslen, reflen)


@dataclass
class BleuReport:
    """Both scores, each with what it was computed on."""

    tokenized: TokenBleu
    lowercased: bool  # the data (its tokenised references) is lowercased
    sacrebleu: float
    signature: str
    sacrebleu_refs: str  # what the SacreBLEU references were
    sentences: int

    @property
    def tokenized_bleu(self) -> float:
        return self.tokenized.score

    def __str__(self) -> str:
        case = "lowercased" if self.lowercased else "cased"
        return (
            f"{self.sentences} sentences\n"
            f"tokenised BLEU (fairseq-generate's; BPE removed, {case} tokens, no smoothing): BLEU4 = {self.tokenized}\n"
            f"SacreBLEU (detokenised hypotheses vs {self.sacrebleu_refs}): {self.sacrebleu:.2f}  {self.signature}"
        )


def remove_bpe(line: str) -> str:
    """subword-nmt's ``@@ `` continuation marks removed, as ``fairseq-generate --remove-bpe``."""
    return (line + " ").replace("@@ ", "").rstrip()


def read_lines(path: str | Path, what: str) -> list[str]:
    """The lines of ``path``, split at ``\n`` only (and a CRLF's ``\r`` dropped), as fairseq and
    sacrebleu read them: U+2028, U+0085 and the other breaks ``str.splitlines`` knows stay inside a
    sentence."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} not found")
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the file
    return [line.removesuffix("\r") for line in lines]


def read_generate_output(path: str | Path) -> tuple[list[str], list[str]]:
    """Hypotheses (``H-id``) and references (``T-id``) of fairseq-generate's output, by id; with
    ``--nbest N`` the first ``H-id`` line of a sentence, its best hypothesis (fairseq's scorer
    takes ``j == 0``)."""
    hyps: dict[int, str] = {}
    refs: dict[int, str] = {}
    for line in read_lines(path, "fairseq-generate output"):
        m = _LINE.match(line)
        if not m:
            continue
        kind, idx, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "H":
            hyps.setdefault(idx, rest.split("\t", 1)[1] if "\t" in rest else "")
        else:
            refs[idx] = rest
    if not hyps or set(hyps) != set(refs):
        raise DataError(f"{path}: expected matching H-<id> and T-<id> lines, found {len(hyps)} H and {len(refs)} T")
    ids = sorted(hyps)
    return [hyps[i] for i in ids], [refs[i] for i in ids]


def score(
    hyps: list[str], refs: list[str], lang: str = "en", tokenized: bool = True,
    ref_raw: list[str] | None = None, ref_raw_name: str = "the raw references",
) -> BleuReport:  # fmt: skip
    """Both BLEUs. ``hyps``/``refs``: Moses-tokenised lines as fairseq's data (``tokenized``),
    or plain text (Moses-tokenised here for the tokenised BLEU). ``ref_raw``: the untokenised,
    original-case references for SacreBLEU; without them SacreBLEU uses ``refs`` detokenised.
    A count mismatch raises :class:`DataError`."""
    import sacrebleu
    from sacremoses import MosesDetokenizer, MosesTokenizer

    if len(hyps) != len(refs):
        raise DataError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if ref_raw is not None and len(ref_raw) != len(hyps):
        raise DataError(f"{len(hyps)} hypotheses but {len(ref_raw)} lines in {ref_raw_name}: not the same test set")
    hyps, refs = [remove_bpe(h) for h in hyps], [remove_bpe(r) for r in refs]
    if tokenized:
        tok_h, tok_r = hyps, refs
        detok = MosesDetokenizer(lang=lang)
        plain_h = [detok.detokenize(h.split()) for h in hyps]
    else:
        tok = MosesTokenizer(lang=lang)
        tok_h = [tok.tokenize(h, escape=True, return_str=True) for h in hyps]
        tok_r = [tok.tokenize(r, escape=True, return_str=True) for r in refs]
        plain_h = hyps
    lowercased = all(r == r.lower() for r in refs)
    if ref_raw is not None:
        sacre_refs, basis = ref_raw, ref_raw_name
    elif tokenized:
        sacre_refs = [detok.detokenize(r.split()) for r in refs]
        basis = (
            "the tokenised test set's references, detokenised (no raw references given: not comparable with "
            "published SacreBLEU)"
        )
    else:
        sacre_refs, basis = refs, "the plain-text references given"
    metric = sacrebleu.BLEU(lowercase=lowercased)
    result = metric.corpus_score(plain_h, [sacre_refs])
    return BleuReport(
        tokenized_bleu(tok_h, tok_r), lowercased, result.score, str(metric.get_signature()), basis, len(hyps)
    )


def score_files(
    generate_output: str | Path | None = None, hyp: str | Path | None = None, ref: str | Path | None = None,
    lang: str = "en", tokenized: bool = True, ref_raw: str | Path | None = None,
) -> BleuReport:  # fmt: skip
    """``score`` on fairseq-generate output, or on a hypothesis and a reference file;
    ``ref_raw``: a file of raw references, one a line, in test-set order."""
    if generate_output is not None:
        hyps, refs = read_generate_output(generate_output)
    elif hyp is not None and ref is not None:
        hyps, refs = read_lines(hyp, "hypothesis file"), read_lines(ref, "reference file")
    else:
        raise DataError("give --generate-output, or both --hyp and --ref")
    raw = read_lines(ref_raw, "raw reference file") if ref_raw is not None else None
    return score(hyps, refs, lang, tokenized, raw, f"the raw references in {ref_raw}")
