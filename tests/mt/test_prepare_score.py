import gzip
import random
import tarfile
from pathlib import Path

import pytest

from seqctx.cli import main
from seqctx.errors import DataError
from seqctx.mt.prepare import (
    clean_pairs,
    extract_segments,
    plain_apostrophes,
    prepare_iwslt14,
    prepare_multi30k,
    strip_train_tags,
    tokenize,
)
from seqctx.mt.score import read_generate_output, remove_bpe, score, score_files, tokenized_bleu

TEXT = Path(__file__).parents[1] / "data" / "text"
SETS = [
    "IWSLT14.TED.dev2010",
    "IWSLT14.TEDX.dev2012",
    "IWSLT14.TED.tst2010",
    "IWSLT14.TED.tst2011",
    "IWSLT14.TED.tst2012",
]


def rows():
    return [line.split("\t") for line in (TEXT / "iwslt14_raw_and_tok_lc.tsv").read_text().splitlines()]


def write_release(folder: Path) -> list[list[str]]:
    """An IWSLT'14 de-en release laid out as de-en.tgz is, built from real TED sentences: the
    first 46 pairs as train.tags (with talk metadata), the other 13 spread over the five XML sets."""
    data = rows()
    train, test = data[:46], data[46:]
    for li, lang in ((0, "de"), (1, "en")):
        lines = ["<url>http://www.ted.com/talks/x.html</url>", "<keywords>talks, x</keywords>",
                 "<speaker>Someone</speaker>", "<talkid>1</talkid>", f"<title>Titel {lang}</title>",
                 f"<description>Beschreibung {lang}</description>"]  # fmt: skip
        lines += [r[li] for r in train]
        (folder / f"train.tags.de-en.{lang}").write_text("\n".join(lines) + "\n")
        for k, name in enumerate(SETS):
            segs = [r[li].replace("'", "\u2019") for r in test[k::5]]
            xml = [
                '<?xml version="1.0" encoding="UTF-8"?>',
                "<mteval>",
                f'<srcset setid="{name}" srclang="german">',
                '<doc docid="1" genre="lectures">',
            ] + [f'<seg id="{i + 1}"> {s} </seg>' for i, s in enumerate(segs)]
            xml += ["</doc>", "</srcset>", "</mteval>"]  # fmt: skip
            (folder / f"{name}.de-en.{lang}.xml").write_text("\n".join(xml) + "\n")
    return [r for k in range(5) for r in test[k::5]]


def test_prepare_iwslt14_takes_an_already_prepared_folder(tmp_path):
    bpe = TEXT / "iwslt14_bpe"  # what prepare-iwslt14.sh leaves: BPE-split {train,valid,test}.{de,en}
    out = prepare_iwslt14(bpe, tmp_path / "from_bpe")
    assert {p.name for p in (out / "data-bin").iterdir()} >= {"dict.de.txt", "dict.en.txt", "train.de-en.de.bin"}
    assert not (out / "code").exists()  # binarised as it is
    tok = tmp_path / "tok"  # tokenised, no BPE yet: the joint BPE is learned and applied
    tok.mkdir()
    for f in bpe.iterdir():
        (tok / f.name).write_text(f.read_text().replace("@@ ", ""))
    out = prepare_iwslt14(tok, tmp_path / "from_tok", merges=300, do_binarize=False)
    assert (out / "code").is_file() and "@@ " in (out / "train.en").read_text()


def test_prepare_iwslt14_matches_the_reference_tokenisation(tmp_path):
    release = tmp_path / "de-en"
    release.mkdir()
    expected_test = write_release(release)
    archive = tmp_path / "de-en.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(release, arcname="de-en")
    out = prepare_iwslt14(archive, tmp_path / "out", merges=200, do_binarize=True)
    tok = out / "tok"
    assert (tok / "test.de").read_text().splitlines() == [r[2] for r in expected_test]  # line for line
    assert (tok / "test.en").read_text().splitlines() == [r[3] for r in expected_test]
    # the raw references SacreBLEU scores against: the segments as released, line for line
    assert (out / "raw" / "test.en").read_text().splitlines() == [r[1].replace("'", "\u2019") for r in expected_test]
    train = (tok / "train.de").read_text().splitlines() + (tok / "valid.de").read_text().splitlines()
    # 46 sentences + title + description lines, metadata gone; every 23rd pair is valid
    assert len(train) == 48 and len((tok / "valid.de").read_text().splitlines()) == 2
    assert "titel de" in train and not any("<" in t for t in train)
    assert set(train) >= {r[2] for r in rows()[:46] if r[2] in train}
    assert all(r[2] in train for r in rows()[:46])
    bpe = (out / "train.de").read_text()
    assert "@@ " in bpe and (out / "code").is_file()
    assert (out / "data-bin" / "train.de-en.de.bin").is_file() and (out / "data-bin" / "dict.en.txt").is_file()


def test_cleaning_and_extraction_rules():
    src, tgt = clean_pairs(["a b c", "a", "x " * 176, "a b c d"], ["a b", "a b c", "x", "a  b c"])
    assert src == ["a b c", "a b c d"] and tgt == ["a b", "a b c"]  # ratio 1.5 and 1-175 tokens
    assert extract_segments(['<seg id="3"> It\u2019s here. </seg>', "<doc>"]) == ["It\u2019s here."]  # as released
    assert plain_apostrophes(["It\u2019s here."]) == ["It's here."]  # before tokenising, as prepare-iwslt14.sh
    assert strip_train_tags(["<url>u</url>", "<title>T</title>", "text"]) == ["T", "text"]


def test_prepare_multi30k(tmp_path):
    out = prepare_multi30k(TEXT / "multi30k_raw", tmp_path / "m30k", merges=300, do_binarize=False)
    for split in ("train", "valid", "test"):
        de = (out / f"{split}.de").read_text().splitlines()
        en = (out / f"{split}.en").read_text().splitlines()
        assert len(de) == len(en) == 300
    first = (out / "tok" / "train.en").read_text().splitlines()[0]
    assert first == first.lower() and " ." in first
    raw = gzip.open(TEXT / "multi30k_raw" / "test_2016_flickr.en.gz", "rt", encoding="utf-8").read().splitlines()
    assert (out / "raw" / "test.en").read_text().splitlines() == raw  # the raw references, cased


def test_scores_follow_the_papers_protocol(tmp_path):
    gen = tmp_path / "gen.out"
    gen.write_text(
        "S-1\tsrc\nT-1\tthe cat sat on the mat .\nH-1\t-0.1\tthe cat sat on the mat .\nD-1\t-0.1\tx\n"
        "T-0\tit &apos;s a test .\nH-0\t-0.2\tit &apos;s a te@@ st .\n"
    )
    hyps, refs = read_generate_output(gen)
    assert refs[0] == "it &apos;s a test ."  # sorted by id
    report = score(hyps, refs)
    assert report.tokenized_bleu == pytest.approx(100.0) and report.lowercased
    assert report.sacrebleu == pytest.approx(100.0) and "case:lc|eff:no|tok:13a" in report.signature
    assert remove_bpe("a@@ b@@ c d") == "abc d"
    report = score(["The cat sat on a mat."], ["The cat sat on the mat."], tokenized=False)
    assert 0 < report.tokenized_bleu < 100 and "case:mixed" in report.signature  # tokenised before scoring
    with pytest.raises(DataError, match="matching H-<id> and T-<id>"):
        (tmp_path / "bad.out").write_text("H-0\t-1\tx\n")
        read_generate_output(tmp_path / "bad.out")


def test_generate_output_takes_the_best_of_nbest_and_splits_lines_at_newlines_only(tmp_path):
    gen = tmp_path / "gen.out"  # --nbest 2: fairseq prints the best hypothesis of a sentence first
    gen.write_bytes(
        "T-0\tdas ist gut\r\nH-0\t-0.1\tthe best\r\nH-0\t-0.9\tthe second\r\n"
        "T-1\ta\u2028b\nH-1\t-0.2\ta\u2028b\n".encode()
    )
    hyps, refs = read_generate_output(gen)
    assert hyps == ["the best", "a\u2028b"]  # U+2028 stays inside its sentence, as in fairseq and sacrebleu
    assert refs == ["das ist gut", "a\u2028b"]  # a CRLF file's \r is dropped


def fairseq_bleu4(hyps: list[str], refs: list[str]) -> str:
    """fairseq-generate's scoring: both strings encoded with the target dictionary (new words
    added), then fairseq's C BLEU scorer."""
    from fairseq.data import Dictionary
    from fairseq.scoring.bleu import BleuConfig, Scorer

    d = Dictionary()
    scorer = Scorer(BleuConfig(pad=d.pad(), eos=d.eos(), unk=d.unk()))
    for h, r in zip(hyps, refs, strict=True):
        scorer.add(d.encode_line(r, add_if_not_exist=True), d.encode_line(h, add_if_not_exist=True))
    return scorer.result_string()


def test_tokenized_bleu_is_fairseqs_bleu4():
    rng = random.Random(0)
    words = "a b c d e f <unk> <<unk>>".split()
    for _ in range(300):  # random corpora: empty lines, <unk> on either side, short lines
        n = rng.randint(1, 5)
        hyps = [" ".join(rng.choices(words, k=rng.randint(0, 10))) for _ in range(n)]
        refs = [" ".join(rng.choices(words, k=rng.randint(0, 10))) for _ in range(n)]
        assert f"BLEU4 = {tokenized_bleu(hyps, refs)}" == fairseq_bleu4(hyps, refs), (hyps, refs)
    # no 4-gram in common: 0.00 as fairseq prints it (sacrebleu's smoothing would not give 0)
    hyps, refs = ["the cat sat in a mat", "a dog ran"], ["the cat sat on the mat", "the dog ran"]
    bleu = tokenized_bleu(hyps, refs)
    assert bleu.matches[3] == 0 and bleu.score == 0.0 and str(bleu).startswith("0.00, 66.7/42.9/20.0/0.0")
    assert fairseq_bleu4(hyps, refs) == f"BLEU4 = {bleu}"
    assert score(hyps, refs).tokenized_bleu == 0.0


def test_sacrebleu_against_raw_references(tmp_path):
    import sacrebleu
    from sacremoses import MosesDetokenizer

    raw = gzip.open(TEXT / "multi30k_raw" / "test_2016_flickr.en.gz", "rt", encoding="utf-8").read().splitlines()[:40]
    (tmp_path / "test.en").write_text("\n".join(raw) + "\n")
    refs = tokenize(raw, "en")  # as prepare writes the tokenised, lowercased test set
    hyps = [" ".join(r.split()[:-2] + ["a", "."]) for r in refs]  # imperfect translations
    gen = tmp_path / "gen.out"
    gen.write_text("".join(f"T-{i}\t{r}\nH-{i}\t-0.5\t{h}\n" for i, (h, r) in enumerate(zip(hyps, refs, strict=True))))
    report = score_files(gen, ref_raw=tmp_path / "test.en")
    detok = [MosesDetokenizer(lang="en").detokenize(h.split()) for h in hyps]
    expected = sacrebleu.corpus_bleu(detok, [raw], lowercase=True)  # a lowercased model: case-insensitive
    assert report.sacrebleu == pytest.approx(expected.score, abs=1e-9) and 10 < report.sacrebleu < 90
    assert report.signature == "nrefs:1|case:lc|eff:no|tok:13a|smooth:exp|version:" + sacrebleu.__version__
    assert f"vs the raw references in {tmp_path / 'test.en'}): {expected.score:.2f}  nrefs:1|case:lc" in str(report)
    cased = score([tokenize([r], "en", lowercase=False)[0] for r in raw], tokenize(raw, "en", lowercase=False),
                  ref_raw=raw)  # fmt: skip
    assert cased.sacrebleu == pytest.approx(100.0) and "case:mixed" in cased.signature and not cased.lowercased
    (tmp_path / "short.en").write_text("\n".join(raw[:39]) + "\n")
    with pytest.raises(DataError, match=r"40 hypotheses but 39 lines in the raw references in .*short\.en"):
        score_files(gen, ref_raw=tmp_path / "short.en")
    assert main(["mt", "score", "--generate-output", str(gen), "--ref-raw", str(tmp_path / "short.en")]) == 2
