"""Files and processes that several processes share, with real processes: the torchvision cache
prepared by two processes at once while a third reads it, and a process group whose members
outlive its leader.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from dltrack import data, processes

#: Prepares the torchvision cache argv[2] from the source argv[1], argv[3] times.
PREPARE = textwrap.dedent(
    """
    import sys
    from dltrack import data
    for _ in range(int(sys.argv[3])):
        data.prepare_torchvision_fashion_mnist(sys.argv[1] or None, root=sys.argv[2])
    """
)

#: Reads every IDX file of the cache argv[1] until the file argv[2] exists; prints each file
#: it found shorter (or longer) than its header says, as JSON, then the number of reads.
READ = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    raw, stop = Path(sys.argv[1]) / "FashionMNIST" / "raw", Path(sys.argv[2])
    bad, reads = [], 0
    while not stop.exists():
        for path in raw.glob("*-ubyte"):
            try:
                body = path.read_bytes()
            except FileNotFoundError:
                bad.append([path.name, "missing"])
                continue
            reads += 1
            dims = body[3] if len(body) >= 4 else 0
            header = 4 + 4 * dims
            if len(body) < header:
                bad.append([path.name, len(body)])
                continue
            size = header
            count = 1
            for i in range(dims):
                count *= int.from_bytes(body[4 + 4 * i: 8 + 4 * i], "big")
            if len(body) != header + count:
                bad.append([path.name, len(body)])
    print(json.dumps({"bad": bad[:20], "reads": reads}))
    """
)


@pytest.mark.timeout(300)
def test_two_processes_prepare_other_sources_into_one_cache_and_a_reader_sees_whole_files(
    tmp_path,
):
    """Before: each preparation truncated the IDX files in place (``open("wb")``), so the
    reader saw empty or partial files."""
    copy = tmp_path / "copy-of-subset"
    shutil.copytree(data.fashion_mnist_dir(), copy)  # another source: each call re-makes it
    root = tmp_path / "tv"
    data.prepare_torchvision_fashion_mnist(root=root)
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READ, str(root), str(stop)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    writers = [
        subprocess.Popen([sys.executable, "-c", PREPARE, source, str(root), "15"])
        for source in ("", str(copy))
    ]
    try:
        for writer in writers:
            assert writer.wait(timeout=240) == 0
    finally:
        stop.touch()
    seen = json.loads(reader.communicate(timeout=60)[0])
    assert seen["reads"] > 0 and seen["bad"] == []
    raw = root / "FashionMNIST" / "raw"
    stamp = json.loads((raw / "source.json").read_text())
    assert stamp["source"] in (str(data.fashion_mnist_dir()), str(copy))
    assert not [p.name for p in raw.iterdir() if p.name.startswith(".") and "lock" not in p.name]


def test_the_default_cache_is_one_folder_per_release():
    root = data.prepare_torchvision_fashion_mnist()
    assert root.parent.name == "torchvision" and root.name.startswith("fashion-mnist-small")


#: A group leader that starts a child ignoring SIGTERM (it prints "ready" once it does), prints
#: the child's pid, and then waits.
STUBBORN_GROUP = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', "
        "flush=True); time.sleep(300)"])
    print(child.pid, flush=True)
    time.sleep(300)
    """
)


@pytest.mark.timeout(120)
def test_stop_kills_the_survivors_of_the_process_group(tmp_path):
    """The leader exits on SIGTERM, its child ignores it. Before: ``stop`` waited for the
    leader only, and the child lived on."""
    log = tmp_path / "group.log"
    process, record = processes.start([sys.executable, "-c", STUBBORN_GROUP], log)
    deadline = time.monotonic() + 60
    while "ready" not in log.read_text() or not any(w.isdigit() for w in log.read_text().split()):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    child = psutil.Process(int(next(w for w in log.read_text().split() if w.isdigit())))
    try:
        processes.stop(record, process, timeout=3)
        gone, alive = psutil.wait_procs([child], timeout=10)
        assert alive == [] and process.poll() is not None
    finally:
        if child.is_running():
            child.kill()
