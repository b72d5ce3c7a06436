"""A disk that fills up mid-download: DiskFullError, the partial kept, a later run resumes.

The download runs in a child process inside a private mount namespace (``unshare -rm``)
with a small tmpfs as its weights folder, so the disk really fills (ENOSPC from the kernel)
without touching the machine's disks or mounts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    r"""
    import hashlib, json, os, sys, threading, time
    sys.path.insert(0, sys.argv[2])
    from tests.hub.test_download_helpers import RangeServer
    from tunehub.errors import DiskFullError
    from tunehub.hub.download import download_file, part_paths

    folder = sys.argv[1]
    data = os.urandom(6 * 1024 * 1024)
    server = RangeServer()
    url = server.add("/w.bin", data)
    server.faults.delay_per_mb = 0.6
    dest = os.path.join(folder, "w.bin")
    part, record = part_paths(__import__("pathlib").Path(dest))
    filler = os.path.join(folder, "filler")

    def fill_when_started():
        while not (os.path.exists(record) and sum(json.load(open(record))["done"]) > 1 << 20):
            time.sleep(0.01)
        with open(filler, "wb") as handle:
            try:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            except OSError:
                pass

    threading.Thread(target=fill_when_started, daemon=True).start()
    outcome = {}
    try:
        download_file(url, dest, connections=2, part_size=1 << 20)
        outcome["first"] = "completed"
    except DiskFullError as exc:
        outcome["first"] = "DiskFullError"
        outcome["message"] = str(exc)
    outcome["after_first"] = sorted(os.listdir(folder))
    os.unlink(filler)
    server.faults.delay_per_mb = 0
    result = download_file(url, dest, connections=2, part_size=1 << 20)
    outcome["resumed_from"] = result.resumed_from
    outcome["second_received"] = result.bytes_transferred
    outcome["ok"] = open(dest, "rb").read() == data
    outcome["after_second"] = sorted(os.listdir(folder))
    server.close()
    print(json.dumps(outcome))
    """
)


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unprivileged mount namespaces (unshare -rm) for a real full disk")
def test_full_disk_stops_cleanly_and_resumes(tmp_path):
    import tunehub

    repo_root = str(__import__("pathlib").Path(tunehub.__file__).resolve().parents[1])
    folder = tmp_path / "small-disk"
    folder.mkdir()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    completed = subprocess.run(
        ["unshare", "-rm", "sh", "-c",
         f'mount -t tmpfs -o size=8m tmpfs "{folder}" && exec "{sys.executable}" "{script}" "{folder}" "{repo_root}"'],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    outcome = json.loads(completed.stdout.strip().splitlines()[-1])
    assert outcome["first"] == "DiskFullError"
    assert "disk full" in outcome["message"] and "resume" in outcome["message"]
    # nothing under the final name; the partial and its progress record kept
    assert outcome["after_first"] == [".w.bin.tunehub-part", ".w.bin.tunehub-part.json", "filler"]
    assert outcome["resumed_from"] >= 1 << 20
    assert outcome["second_received"] == 6 * 1024 * 1024 - outcome["resumed_from"]
    assert outcome["ok"] and outcome["after_second"] == ["w.bin"]
