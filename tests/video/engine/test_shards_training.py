"""Training and testing from shards: with shuffling off, a run from shards equals the run from the
prepared files (same samples, same order, same weights); a stop mid-epoch (in process, and a real
SIGTERM to the process group with 2 loader workers) resumed with `--resume auto` equals the
uninterrupted run; `seqctx test` over shards equals over files, each video once; an S3 server on
the loopback interface (moto's server mode, a process of its own): training and testing from
`s3://` equal local shards."""

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqctx.cli import main
from seqctx.stopping import Preempted
from seqctx.video.data import build_dataset
from seqctx.video.data.shards import ShardIndex
from seqctx.video.engine import Trainer

from .runs import tiny_config
from .test_preemption import ENV, assert_same_weights, cli, records, sets, stop_group_in_epoch_2


@pytest.fixture(scope="module")
def prepared(synth, tmp_path_factory):
    """The synthetic set prepared once: MP4 copies in OUT and shards of about 3 clips."""
    out = tmp_path_factory.mktemp("prepared")
    for split in ("train", "validation"):
        args = ["data", "prepare", str(synth / f"{split}.json"), "--root", str(synth / "videos"), "--out", str(out)]
        assert main([*args, "--labels", str(synth / "labels.json"), "--short-side", "32", "--shards",
                     "--shard-size", "6K"]) == 0  # fmt: skip
    return out


def from_files(synth, prepared, run, *extra):
    return tiny_config(synth, run, f"data.root={prepared}", *extra)


def shard_keys(where: str) -> list[str]:
    return ["data.format=shards", f"data.train_annotation={where}/train/index.json",
            f"data.val_annotation={where}/validation/index.json"]  # fmt: skip


def from_shards(synth, where, run, *extra):
    return tiny_config(synth, run, *shard_keys(str(where)), *extra)


def strip(rows):
    return [{k: v for k, v in r.items() if k != "clips_per_s"} for r in rows]


def test_with_shuffling_off_a_run_from_shards_equals_the_run_from_the_prepared_files(synth, prepared, tmp_path):
    assert len(list((prepared / "shards" / "train").glob("*.tar"))) >= 3
    with Trainer(from_files(synth, prepared, tmp_path / "files", "data.shuffle=false"), progress=False) as t:
        t.fit()
    with Trainer(
        from_shards(synth, prepared / "shards", tmp_path / "shards", "data.shuffle=false"), progress=False
    ) as t:
        t.fit()
    assert_same_weights(tmp_path / "files" / "latest.pt", tmp_path / "shards" / "latest.pt")
    assert strip(records(tmp_path / "files")) == strip(records(tmp_path / "shards"))


def test_a_stop_mid_epoch_resumed_equals_the_uninterrupted_run_from_shards(synth, prepared, tmp_path):
    shards = prepared / "shards"
    with Trainer(from_shards(synth, shards, tmp_path / "full", "data.shuffle_buffer=2"), progress=False) as t:
        t.fit()

    def signal_at(epoch, iteration):
        if (epoch, iteration) == (1, 1):
            os.kill(os.getpid(), signal.SIGUSR1)

    part = tmp_path / "part"
    with pytest.raises(Preempted, match=r"stopped by SIGUSR1 at epoch 2, iteration 1"):
        with Trainer(from_shards(synth, shards, part, "data.shuffle_buffer=2"), progress=False,
                     on_iteration=signal_at) as t:  # fmt: skip
            t.fit()
    with Trainer(from_shards(synth, shards, part, "data.shuffle_buffer=2", "train.resume=auto"), progress=False) as t:
        t.fit()
    assert_same_weights(tmp_path / "full" / "latest.pt", part / "latest.pt")
    assert strip(records(part)) == strip(records(tmp_path / "full"))


def test_sigterm_to_the_group_with_two_workers_on_shards_and_resume_auto(synth, prepared, tmp_path):
    common = ["train.epochs=30", "train.eval_every=30", "data.workers=2"]
    full = tmp_path / "full"
    with Trainer(from_shards(synth, prepared / "shards", full, *common), progress=False) as t:
        t.fit()
    run = tmp_path / "run"
    stop_group_in_epoch_2(cli("train", str(full / "config.yaml"), "--work-dir", str(run), "--resume", "auto"), run)
    assert main(["train", str(full / "config.yaml"), "--work-dir", str(run), "--resume", "auto"]) == 0
    assert_same_weights(full / "latest.pt", run / "latest.pt")


def test_a_truncated_shard_is_reported_per_epoch_and_the_run_goes_on(synth, prepared, tmp_path, caplog):
    shards = tmp_path / "shards"
    shutil.copytree(prepared / "shards", shards)
    index = ShardIndex.load(str(shards / "train" / "index.json"))
    last = shards / "train" / index.shards[-1]["name"]
    last.write_bytes(last.read_bytes()[: int(index.samples["offset"][-1]) + 100])  # the last sample cut short
    with caplog.at_level(logging.WARNING), Trainer(from_shards(synth, shards, tmp_path / "run"), progress=False) as t:
        t.fit()
    epochs = [r for r in records(tmp_path / "run") if r["type"] == "epoch"]
    assert [r["failures"] for r in epochs] == [1, 1]  # the one cut sample, each epoch, replaced
    assert "epoch 1: 1 of its 12 videos failed to load and were replaced" in caplog.text
    assert f"{last}#{index.samples['id'][-1]}: shard {last} is cut short" in caplog.text


@pytest.fixture(scope="module")
def trained(synth, prepared, tmp_path_factory):
    run = tmp_path_factory.mktemp("trained")
    with Trainer(from_files(synth, prepared, run, "train.epochs=1"), progress=False) as t:
        t.fit()
    return run / "latest.pt"


def test_seqctx_test_over_shards_equals_over_files_each_video_once(trained, prepared, tmp_path, capsys):
    assert main(["test", "--checkpoint", str(trained), "--out", str(tmp_path / "files.csv"),
                 *sets([f"data.root={prepared}"])]) == 0  # fmt: skip
    keys = shard_keys(str(prepared / "shards"))
    assert main(["test", "--checkpoint", str(trained), "--out", str(tmp_path / "shards.csv"), *sets(keys)]) == 0
    files, shards = (tmp_path / "files.csv").read_text(), (tmp_path / "shards.csv").read_text()
    assert files == shards and len(shards.splitlines()) == 1 + 4  # the header, each validation video once


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_s3_server() -> tuple[subprocess.Popen, dict[str, str]]:
    """moto's S3 server, a process of its own on a free loopback port, and the environment a user
    would set for it (endpoint, credentials)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "seqctx",
           "AWS_SECRET_ACCESS_KEY": "seqctx", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, env
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "the S3 server did not start"
            time.sleep(0.1)


@contextlib.contextmanager
def environment(env: dict[str, str]):
    """``env`` in os.environ (and fresh S3 clients: fsspec caches file systems, endpoint included)."""
    import s3fs

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3_server():
    server, env = start_s3_server()
    with environment(env):
        yield env
    server.terminate()
    server.wait(timeout=30)


def test_a_network_error_is_retried_then_fails_that_sample_named(prepared, tmp_path, caplog):
    import s3fs

    server, env = start_s3_server()
    try:
        with environment(env):
            s3fs.S3FileSystem().put(str(prepared / "shards"), "seqctx-net/k", recursive=True)
            dataset = build_dataset("s3://seqctx-net/k/train/index.json", "", decode_timeout=None, on_error="drop")
            assert dataset[0][0] is not None
            server.kill()  # the store goes away mid-epoch
            server.wait()
            start = time.monotonic()
            views, _, meta = dataset[1]
            assert views is None and "failed 3 times" in meta["error"], meta
            assert meta["error"].startswith(f"s3://seqctx-net/k/train/{dataset.shards.shards[0]['name']}#")
            assert caplog.text.count("retrying") == 2 and time.monotonic() - start < 60
    finally:
        server.kill()
        server.wait()


def test_training_and_testing_from_s3_equal_local_shards(synth, prepared, trained, s3_server, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.mkdir("seqctx-data")
    fs.put(str(prepared / "shards"), "seqctx-data/k", recursive=True)  # as `aws s3 sync OUT/shards s3://...`
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls("seqctx-data/k/train")) == sorted(
        p.name for p in (prepared / "shards" / "train").iterdir()
    )
    with Trainer(from_shards(synth, prepared / "shards", tmp_path / "local", "data.workers=2"), progress=False) as t:
        t.fit()
    with Trainer(from_shards(synth, "s3://seqctx-data/k", tmp_path / "s3", "data.workers=2"), progress=False) as t:
        t.fit()
    assert_same_weights(tmp_path / "local" / "latest.pt", tmp_path / "s3" / "latest.pt")
    assert strip(records(tmp_path / "local")) == strip(records(tmp_path / "s3"))
    outputs = {}
    for name, where in (("local", prepared / "shards"), ("s3", "s3://seqctx-data/k")):
        outputs[name] = tmp_path / f"{name}.csv"
        assert (
            main(["test", "--checkpoint", str(trained), "--out", str(outputs[name]), *sets(shard_keys(str(where)))])
            == 0
        )
    assert outputs["local"].read_text() == outputs["s3"].read_text()


def test_the_slurm_script_trains_from_s3_shards(synth, prepared, s3_server, tmp_path):
    """scripts/slurm_train.sh (under stand-ins for srun and scontrol, torchrun on this machine) with
    the shards' keys on its command line and the endpoint in the job's environment, as README's
    "Kinetics from a bucket" runs it."""
    import s3fs

    s3fs.S3FileSystem().put(str(prepared / "shards"), "seqctx-slurm/k", recursive=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho 127.0.0.1\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    local = tmp_path / "local"
    with Trainer(from_shards(synth, prepared / "shards", local), progress=False) as t:
        t.fit()
    slurm = {"SLURM_JOB_ID": "4343", "SLURM_JOB_NODELIST": "node1", "SLURM_JOB_NUM_NODES": "1"}
    env = {**ENV, **s3_server, **slurm, "PATH": f"{bin_dir}:{ENV['PATH']}", "PYTHON": sys.executable,
           "GPUS_PER_NODE": "1", "MASTER_PORT": "29553"}  # fmt: skip
    script = Path(__file__).parents[3] / "scripts" / "slurm_train.sh"
    run = tmp_path / "run"
    keys = sets(shard_keys("s3://seqctx-slurm/k"))
    done = subprocess.run(["bash", str(script), str(local / "config.yaml"), "--work-dir", str(run), *keys], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert_same_weights(local / "latest.pt", run / "latest.pt")
