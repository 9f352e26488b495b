"""The ``seqctx`` command: parses arguments, then calls into the package. No logic of its own.

A user's mistake (:class:`~seqctx.errors.UserError`: a config, data, checkpoint or work folder
that cannot be used) prints one message and exits with code 2; ``--debug`` shows its traceback.
Every command ends its child processes on every way out (:func:`seqctx.stopping.end_children`);
SIGTERM and SIGHUP outside training, and Ctrl-C anywhere, end it with one line and ``128 +
signal`` (143, 129, 130); a stopped training run saves and exits 75.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from seqctx.errors import DataError, UserError, one_line
from seqctx.stopping import PREEMPTED_EXIT_CODE, Preempted, Stopped, end_children, stop_on_signals

DEMO_ANALYSIS_VIDEOS = 100  # `seqctx demo` analyses its TSM+CGC model on this many validation videos


class _StderrHandler(logging.Handler):
    """Writes seqctx's log records to the ``sys.stderr`` of the moment (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        print(prefix + self.format(record), file=sys.stderr)


def _show_log() -> None:
    """Show seqctx's INFO and WARNING records (pretrained-weights reports, unreadable videos)."""
    logger = logging.getLogger("seqctx")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.INFO)


def _train(args: argparse.Namespace) -> int:
    from seqctx.video.engine import Trainer, load_config
    from seqctx.video.engine.train import RunFinished

    overrides = list(args.set) + ([f"work_dir={args.work_dir}"] if args.work_dir else [])
    try:
        with Trainer(load_config(args.config, overrides), resume=args.resume, overwrite=args.overwrite) as trainer:
            metrics = trainer.fit()
    except RunFinished as e:
        if os.environ.get("RANK", "0") == "0":
            print(e, file=sys.stderr)
        return 0
    except Preempted as e:
        if os.environ.get("RANK", "0") == "0":
            print(e, file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    if trainer.rank == 0:
        print(" ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    return 0


def _test(args: argparse.Namespace) -> int:
    from seqctx.video.engine import evaluate_checkpoint
    from seqctx.video.engine.distributed import cleanup, is_main

    try:
        result = evaluate_checkpoint(args.config, args.checkpoint, args.clips, args.crops, args.set, args.out,
                                     ema=args.ema)  # fmt: skip
        main = is_main()  # under torchrun: rank 0 prints
    finally:
        cleanup()
    if main:
        print(result.summary())
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from seqctx.video.analysis import analyze
    from seqctx.video.engine.distributed import cleanup, is_main

    only = [x.strip() for x in args.only.split(",")] if args.only else None
    try:
        outcomes = analyze(args.config, args.checkpoint, args.out, args.max_videos, args.compare, only, args.set)
        main = is_main()  # under torchrun: rank 0 prints
    finally:
        cleanup()
    if main:
        for o in outcomes:
            print(o.line + ("" if o.skipped else f"\n  -> {o.files[0]}, {o.files[1]}"))
    return 0


def _predict(args: argparse.Namespace) -> int:
    if (args.checkpoint is None) == (args.onnx is None):
        raise UserError("seqctx predict takes --checkpoint CKPT (PyTorch) or --onnx FILE (onnxruntime): one of the two")
    if args.stream is not None:
        if args.videos:
            raise UserError(f"--stream reads one source; the videos {' '.join(args.videos)} are not part of it")
        return _predict_stream(args)
    if not args.videos:
        raise UserError("seqctx predict needs video files or folders (or --stream SOURCE)")
    if args.onnx is not None:
        from seqctx.video.export import predict_onnx

        predictions = predict_onnx(args.onnx, args.videos, k=5)
    else:
        from seqctx.video.engine import predict_videos

        predictions = predict_videos(args.checkpoint, args.videos, k=5, overrides=args.set)
    failed, total = [], 0
    for p in predictions:
        total += 1
        if p.error is not None:
            failed.append(p.video)
            print(f"{p.video}\n  cannot be read: {p.error}", flush=True)
            continue
        print(p.video)
        for name, score in p.top:
            print(f"  {score:6.3f}  {name}")
        sys.stdout.flush()
    if failed:
        print(f"{len(failed)} of {total} videos could not be read: {', '.join(failed)}", file=sys.stderr)
    return int(bool(failed))


def _predict_stream(args: argparse.Namespace) -> int:
    import json

    from seqctx.stopping import Stopped
    from seqctx.video.online.predict import StreamStats, load_recognizer, predict_stream

    recognizer, classes, size, scale_size = load_recognizer(args.checkpoint, args.onnx, args.set, args.smoothing)
    warmup = args.warmup if args.warmup is not None else recognizer.smoothing
    stats = StreamStats()
    try:
        for r in predict_stream(
            args.stream, recognizer, classes, size, scale_size, stats, args.every, warmup, args.top
        ):
            if args.json:
                print(json.dumps({"frame": r.frame, "latency_ms": round(r.latency_ms, 2), "top": r.top,
                                  "smoothed": r.smoothed}), flush=True)  # fmt: skip
            else:
                shown = ", ".join(f"{name} {score:.3f}" for name, score in r.smoothed)
                print(f"frame {r.frame:6d}  {r.latency_ms:6.1f} ms  {shown}", flush=True)
    except (Stopped, KeyboardInterrupt):
        print(stats.summary(), file=sys.stderr, flush=True)  # what the stream did before the stop
        raise
    print(stats.summary(), file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    from seqctx.video.export import export_checkpoint, verify_export

    if args.online:
        return _export_online(args)
    exported, recognizer = export_checkpoint(args.checkpoint, args.out, args.format, args.frames, args.size, args.set,
                                             optimize=not args.no_optimize)  # fmt: skip
    print(f"{exported.path}: {exported.format}, input {exported.frames} frames of {exported.size}x{exported.size} "
          f"(uint8 N x T x H x W x 3, N dynamic), {len(exported.classes)} classes")  # fmt: skip
    if args.verify:
        verify_export(exported, recognizer)
        runner = "onnxruntime" if exported.format == "onnx" else "torch.export.load"
        for batch, diff in exported.max_abs_diff.items():
            print(f"  batch {batch}: largest |{runner} - PyTorch| logit difference {diff:.2e}")
    return 0


def _export_online(args: argparse.Namespace) -> int:
    from seqctx.video.online.onnx import export_online, verify_online

    if args.format != "onnx" or args.frames is not None:
        raise UserError("--online writes the frame-by-frame ONNX graph: no --format pt2, no --frames")
    exported, net = export_online(args.checkpoint, args.out, args.size, args.set, optimize=not args.no_optimize)
    print(f"{exported.path}: online onnx, input one {exported.size}x{exported.size} frame per stream (uint8 N x H x W "
          f"x 3, N dynamic) and {len(exported.buffers)} buffers, {len(exported.classes)} classes")  # fmt: skip
    if args.verify:
        verify_online(exported, net)
        print(f"  {exported.frames_checked} frames streamed: largest |onnxruntime - PyTorch| logit difference "
              f"{exported.max_abs_diff:.2e}")  # fmt: skip
    return 0


def _demo(args: argparse.Namespace) -> int:
    from seqctx.video.analysis import analyze
    from seqctx.video.engine.demo import DEMO_CONFIG, run_demo

    rows = run_demo(args.config or DEMO_CONFIG, args.work_dir, args.set)
    print()
    for r in rows:
        acc = f"top-1 {r['top1']:5.1f}  top-5 {r['top5']:5.1f}  mean-class {r['mean_class_accuracy']:5.1f}"
        print(f"{r['model']:10s} {acc}  ({r['minutes']:.1f} min)  plots: {r['plots']}")
    print("Classes come in time-reversed pairs: a frame-order-blind model (TSN) tops out near 50% top-1.")
    from seqctx.video.online.evaluate import streamed_accuracy

    online = streamed_accuracy(Path(args.work_dir) / "tsm_online" / "latest.pt")
    print(f"TSM online (shift from frame t-1 only), {online.videos} validation videos: top-1 {online.offline_top1:.1f} "
          f"offline (each clip at once), {online.streamed_top1:.1f} streamed frame by frame (largest clip logit "
          f"difference {online.max_logit_diff:.1e})")  # fmt: skip
    run = Path(args.work_dir) / "tsm_cgc"
    print(f"\nthe papers' analyses of the TSM+CGC model ({DEMO_ANALYSIS_VIDEOS} validation videos), against TSM:")
    outcomes = analyze(None, run / "latest.pt", Path(args.work_dir) / "analysis", DEMO_ANALYSIS_VIDEOS,
                       compare=Path(args.work_dir) / "tsm" / "latest.pt")  # fmt: skip
    for o in outcomes:
        print(o.line + ("" if o.skipped else f"\n  -> {o.files[0]}"))
    return 0


def _mt_user_dir(args: argparse.Namespace) -> int:
    from seqctx.mt import user_dir

    print(user_dir())
    return 0


def _mt_prepare(args: argparse.Namespace) -> int:
    from seqctx.mt.prepare import prepare_iwslt14, prepare_multi30k

    prepare = prepare_iwslt14 if args.corpus == "iwslt14" else prepare_multi30k
    out = prepare(
        args.archive, args.out, merges=args.bpe_merges, do_binarize=not args.no_binarize, workers=args.workers
    )
    print(f"prepared {args.corpus} in {out}")
    return 0


def _mt_score(args: argparse.Namespace) -> int:
    from seqctx.mt.score import score_files

    print(score_files(args.generate_output, args.hyp, args.ref, args.lang, not args.plain_text, args.ref_raw))
    return 0


def _mt_run(args: argparse.Namespace) -> int:
    from seqctx.mt import recipes

    recipe = recipes.load_recipe(args.config, args.set)
    if args.mt_command == "train":
        recipes.train(recipe, dry_run=args.dry_run)  # the command is logged before it runs
    else:
        scores = recipes.evaluate(recipe, dry_run=args.dry_run)
        if scores is not None:
            print(scores)
    return 0


def _operators(args: argparse.Namespace) -> int:
    from seqctx.modules.tour import operator_table

    if args.batch < 2:
        raise UserError(f"--batch must be >= 2 (the tour trains a step; BatchNorm needs two samples), got {args.batch}")

    print(operator_table(args.channels, args.size, args.batch))
    return 0


def _models(args: argparse.Namespace) -> int:
    from seqctx.video.models import MODELS

    for info in MODELS.values():
        shifts = "; shift: offline, online (no cgc)" if info.family.temporal_shift else ""
        print(f"{info.name:10s} contexts: {', '.join(info.contexts)}{shifts}")
    return 0


def _frame_template(value: str) -> str:
    from seqctx.video.data.backends import check_frame_template

    try:
        check_frame_template(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("is ")) from None
    return value


def _positive_int(value: str) -> int:
    """A whole number of at least 1 (frames, pixels, classes), refused in words otherwise."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {number}")
    return number


def _byte_size(value: str) -> int:
    from seqctx.video.data.shards import parse_size

    try:
        return parse_size(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _data_check(args: argparse.Namespace) -> int:
    from seqctx.video.data import build_dataset, detect_format
    from seqctx.video.data.check import check_dataset, format_report, frame_naming

    readable = "://" in args.annotation or Path(args.annotation).is_file()  # else build_dataset names it
    if args.root is None and (args.format or (detect_format(args.annotation) if readable else "shards")) != "shards":
        raise DataError("--root is needed: the folder holding the videos (or frame folders) of the annotation")
    dataset = build_dataset(args.annotation, args.root or "", args.labels, args.format,
                            backend=args.backend, frame_template=args.frame_template,
                            first_frame=args.first_frame, short_side=args.short_side,
                            decode_timeout=args.timeout)  # fmt: skip
    statuses = check_dataset(dataset, args.min_frames, args.workers, exact=args.exact)
    print(format_report(statuses))
    naming = frame_naming(dataset)
    if naming:
        print(naming)
    return int(any(s.status != "ok" for s in statuses))


def _data_prepare(args: argparse.Namespace) -> int:
    from seqctx.video.data import build_dataset
    from seqctx.video.data.prepare import FAILURES_FILE, prepare_dataset

    dataset = build_dataset(args.annotation, args.root, args.labels, args.format)
    report = prepare_dataset(
        dataset, args.annotation, args.out, short_side=args.short_side, keyint=args.keyint, crf=args.crf,
        frames=args.frames, workers=args.workers, timeout=args.timeout or None,
        shard_size=args.shard_size if args.shards else None,
    )  # fmt: skip
    print(report.summary())
    if report.failed:
        print(f"failures listed in {Path(args.out) / FAILURES_FILE}")
    return int(bool(report.failed))


def _data_synth(args: argparse.Namespace) -> int:
    from seqctx.video.data import SynthConfig, generate_synthetic

    cfg = SynthConfig(
        classes=args.classes,
        videos_per_class=args.videos_per_class,
        num_frames=args.frames,
        size=args.size,
        seed=args.seed,
    )
    paths = generate_synthetic(args.out_dir, cfg, progress=True, overwrite=args.overwrite)
    for name, path in paths.items():
        print(f"{name:10s} {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqctx", description="Context modules for video and sequence models.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error too")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("operators", help="tour of the context operators: parameters, identity at init, time")
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--batch", type=int, default=8)
    p.set_defaults(func=_operators)

    p = sub.add_parser("models", help="list the video models and the context operators each takes")
    p.set_defaults(func=_models)

    data = sub.add_parser("data", help="video data tools").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("check", help="open every video of an annotation file; exit 1 if any is bad")
    p.add_argument("annotation", help="Kinetics CSV, SSv2 JSON, SSv1 CSV or a list file")
    p.add_argument("--root", help="folder holding the videos (or frame folders); not for a shard index")
    p.add_argument("--labels", help="labels file (SSv1/SSv2) or label map (Kinetics)")
    p.add_argument("--format", choices=["kinetics", "ssv2", "ssv1", "list", "shards"], help="default: detected")
    p.add_argument(
        "--backend",
        choices=["auto", "decord", "pyav", "torchcodec", "frames"],
        default="auto",
        help="auto (default): frames for folders, else the first installed of pyav, decord, torchcodec",
    )
    p.add_argument("--frame-template", type=_frame_template, help="frame folders' file names, e.g. img_{:05d}.jpg")
    p.add_argument("--first-frame", type=int, help="the number of a folder's first frame (default: its lowest)")
    p.add_argument("--min-frames", type=int, default=8, help="fewer frames than this is 'too short'")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--short-side", type=_positive_int, help="decode at this shorter side, as data.decode_short_side")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a video may take (data.decode_timeout)")
    p.add_argument(
        "--exact", action="store_true", help="also compare random access with a sequential decode (list 'inexact' ones)"
    )
    p.set_defaults(func=_data_check)
    p = data.add_parser(
        "prepare", help="re-encode every video at a short side (H.264, short keyframe interval) or to JPEG frames"
    )
    p.add_argument("annotation", help="Kinetics CSV, SSv2 JSON, SSv1 CSV or a list file")
    p.add_argument("--root", required=True, help="folder holding the videos (read only)")
    p.add_argument("--out", required=True, help="folder for the copies (relative paths kept); then data.root=OUT")
    p.add_argument("--labels", help="labels file (SSv1/SSv2) or label map (Kinetics)")
    p.add_argument("--format", choices=["kinetics", "ssv2", "ssv1", "list"], help="default: detected")
    p.add_argument("--short-side", type=int, default=256, help="shorter side of the copies, even (default 256)")
    p.add_argument("--keyint", type=int, default=16, help="frames between keyframes (default 16)")
    p.add_argument("--crf", type=int, default=18, help="x264 quality, lower is better (default 18)")
    p.add_argument("--frames", action="store_true", help="write JPEG frame folders instead of MP4s")
    p.add_argument("--workers", type=int, default=0, help="parallel conversions (default 0: in this process)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one video may take (default 600; 0: none)")
    p.add_argument(
        "--shards", action="store_true", help="also pack the copies into WebDataset shards + index.json (OUT/shards/)"
    )
    p.add_argument("--shard-size", type=_byte_size, default="1G", help="bytes of clips per shard: 500M, 1G (default)")
    p.set_defaults(func=_data_prepare)
    p = data.add_parser("synth", help="write the synthetic motion data set (H.264 mp4 + SSv2-style JSON)")
    p.add_argument("out_dir")
    p.add_argument("--classes", type=int, default=10, help="2 to 10 (time-reversed pairs)")
    p.add_argument("--videos-per-class", type=int, default=40)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="write over annotation files already in OUT_DIR")
    p.set_defaults(func=_data_synth)

    p = sub.add_parser("train", help="train a video model from a YAML config (also under torchrun)")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--work-dir", help="where checkpoints, logs and plots go (config: work_dir)")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        choices=["auto"],
        help="continue the run in WORK_DIR from its latest.pt; `--resume auto`: continue it when there is one, start "
        "it otherwise, exit 0 when it is finished (config: train.resume)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a WORK_DIR that holds a run (its files are moved to WORK_DIR/replaced-*)",
    )
    p.set_defaults(func=_train)

    p = sub.add_parser("test", help="multi-clip x multi-crop evaluation of a checkpoint")
    p.add_argument("config", nargs="?",
                   help="YAML config for data and views (default: the checkpoint's own); the model is always the "
                   "checkpoint's")  # fmt: skip
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--clips", type=int, help="clips per video (default: data.test_clips)")
    p.add_argument("--crops", type=int, choices=[1, 3, 10], help="crops per clip (default: data.test_crops)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--out",
        help="per-video predictions CSV; beside it the metrics (.json) and the confusion matrix (_confusion.json, "
        "_confusion.png) (default: next to the checkpoint)",
    )
    p.add_argument("--ema", action="store_true", help="test the averaged weights of a train.ema run (model_ema)")
    p.set_defaults(func=_test)

    p = sub.add_parser("analyze", help="the papers' analyses of a trained model: figures (PNG) and numbers (JSON)")
    p.add_argument("config", nargs="?", help="YAML config for the data (default: the checkpoint's own)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="folder for NAME.png and NAME.json of each analysis")
    p.add_argument("--max-videos", type=int, help="N videos of data.val_annotation, across its classes (default: all)")
    p.add_argument("--compare", metavar="OTHER_CKPT", help="a second model beside the first (e.g. a baseline)")
    p.add_argument("--only", help="comma-separated analyses (default: all that apply): gct_gating, "
                   "class_selectivity, channel_sparsity, cgc_gates")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_analyze)

    p = sub.add_parser("predict", help="top-5 classes of video files (model and preprocessing from the checkpoint)")
    p.add_argument("--checkpoint", help="a training checkpoint (PyTorch)")
    p.add_argument("--onnx", help="an ONNX file of `seqctx export` (onnxruntime), instead of --checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. data.backend=pyav")
    p.add_argument("videos", nargs="*", help="video files, or folders of videos (before or after the options)")
    p.add_argument("--stream", metavar="SOURCE", help="an online TSM frame by frame over SOURCE: a video file, a frame "
                   "folder, a camera (/dev/video0) or a URL FFmpeg opens (rtsp://, http://)")  # fmt: skip
    p.add_argument("--every", type=int, default=1, help="--stream: process every N-th frame (default 1)")
    p.add_argument("--warmup", type=int, help="--stream: processed frames before printing (default: --smoothing)")
    p.add_argument(
        "--smoothing", type=_positive_int, default=8, help="--stream: frames the smoothed top-k averages (default 8)"
    )
    p.add_argument("--top", type=int, default=5, help="--stream: classes per frame (default 5)")
    p.add_argument("--json", action="store_true", help="--stream: one JSON object per frame instead of text")
    p.set_defaults(func=_predict)

    p = sub.add_parser("export", help="a trained model as ONNX or a torch.export program, for serving")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="the file to write (e.g. model.onnx, model.pt2)")
    p.add_argument("--format", default="onnx", help="onnx (default) or pt2 (torch.export)")
    p.add_argument("--frames", type=int, help="frames per clip (default: model.num_segments)")
    p.add_argument("--size", type=int, help="frame side (default: data.size, the size it was trained at)")
    p.add_argument("--verify", action="store_true", help="run the file on random clips, print its largest difference")
    p.add_argument("--no-optimize", action="store_true", help="skip onnxscript's graph optimiser (a faster export)")
    p.add_argument("--online", action="store_true", help="an online TSM as (frame, *buffers) -> (logits, *buffers)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_export)

    mt = sub.add_parser("mt", help="machine translation with fairseq").add_subparsers(dest="mt_command", required=True)
    p = mt.add_parser("user-dir", help="print the plugin folder for fairseq's --user-dir")
    p.set_defaults(func=_mt_user_dir)
    p = mt.add_parser("prepare-iwslt14", help="IWSLT'14 (or --corpus multi30k) -> tokenised, BPE, fairseq data-bin")
    p.add_argument("--archive", required=True, help="de-en.tgz or its extracted folder (Multi30K: the raw folder)")
    p.add_argument("--out", required=True)
    p.add_argument("--corpus", choices=["iwslt14", "multi30k"], default="iwslt14")
    p.add_argument("--bpe-merges", type=int, default=10000)
    p.add_argument("--no-binarize", action="store_true", help="stop before fairseq-preprocess")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=_mt_prepare)
    p = mt.add_parser("score", help="tokenised BLEU (fairseq's BLEU4, the papers' tables) and SacreBLEU")
    p.add_argument("--generate-output", help="fairseq-generate's output (H-/T- lines)")
    p.add_argument("--hyp", help="hypotheses, one a line (tokenised as the data, unless --plain-text)")
    p.add_argument("--ref", help="references, one a line, tokenised as the data (unless --plain-text)")
    p.add_argument("--ref-raw", help="raw references (untokenised, original case; prepare-iwslt14's OUT/raw/test.en) "
                   "for SacreBLEU")  # fmt: skip
    p.add_argument("--lang", default="en", help="target language (Moses detokeniser)")
    p.add_argument("--plain-text", action="store_true", help="--hyp/--ref are detokenised text")
    p.set_defaults(func=_mt_score)
    mt_runs = {
        "train": "run fairseq-train from an mt_configs recipe (prints the command)",
        "evaluate": "average the last checkpoints, fairseq-generate the test set, score it",
    }
    for name, help_text in mt_runs.items():
        p = mt.add_parser(name, help=help_text)
        p.add_argument("config")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
        p.add_argument("--dry-run", action="store_true", help="print the command only")
        p.set_defaults(func=_mt_run)

    p = sub.add_parser("demo", help="synthetic motion data, train TSN / TSM / TSM+CGC, print their accuracies")
    p.add_argument("--config", help="default: the demo config shipped with seqctx")
    p.add_argument("--work-dir", default="work_dirs/demo")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # `predict a.mp4 --checkpoint c.pt b.mp4`: videos after the options too
        if not hasattr(args, "videos") or any(x.startswith("-") for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.videos += extra
    _show_log()
    logger = logging.getLogger("seqctx")
    propagate, logger.propagate = logger.propagate, False  # printed once, not again by a root handler fairseq adds
    try:
        with stop_on_signals():
            return int(args.func(args) or 0)
    except UserError as e:
        if args.debug:
            raise
        return _ended(f"seqctx: error: {one_line(e)}", 2)
    except Preempted as e:  # raised outside `train` (a demo run)
        return _ended(str(e), PREEMPTED_EXIT_CODE)
    except (Stopped, KeyboardInterrupt) as e:
        if args.debug:
            raise
        stop = e if isinstance(e, Stopped) else Stopped(2)  # SIGINT
        return _ended(f"seqctx: {stop}{' (Ctrl-C)' if stop.signum == 2 else ''}: {args.command} ended", stop.exit_code)
    except BrokenPipeError:  # the reader went away (`seqctx predict ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        end_children()
        logger.propagate = propagate


def _ended(message: str, code: int) -> int:
    """Print why the command ended, after its child processes ended (so that the message is the
    last line, after whatever a loader worker still logged), and return its exit code. Further
    stop signals are ignored meanwhile: the command is ending, and a second one must not cut
    that short."""
    signums = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signums}
    try:
        end_children()
        print(message, file=sys.stderr)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
