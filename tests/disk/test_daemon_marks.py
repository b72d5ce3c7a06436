"""The daemon and the disk commands: "removed by you" is not fetched again; "update available"; update = "auto"."""

from __future__ import annotations

import os
import time

from tests.daemon.conftest import DaemonProcess, definition_in
from tests.disk.conftest import FT1_8, FT1_16, OTHER, VAE


def _daemon_home(disk, extra: str = "") -> None:
    config = (disk.home.root / "tunehub.toml").read_text().split("\n[daemon]")[0]
    disk.home.write_config(config + f'\n[daemon]\npull = "all"\nquantize = "never"\n{extra}')


def test_daemon_with_pull_all_does_not_refetch_what_rm_removed(disk):
    _daemon_home(disk)
    first = disk.run("daemon", "--once")
    assert (disk.ckpts / FT1_8).exists() and (disk.ckpts / VAE).exists(), first.stdout + first.stderr
    disk.run("rm", "t2v_ft1", "--yes", check=True)
    assert not (disk.ckpts / FT1_8).exists()
    again = disk.run("daemon", "--once")
    assert "0 job(s) done" in again.stdout, again.stdout
    assert not (disk.ckpts / FT1_8).exists() and not (disk.ckpts / FT1_16).exists()

    # a running daemon: removing sets the state, and nothing is queued for it
    daemon = DaemonProcess(disk.home.root, disk.env()).start()
    try:
        entry = daemon.wait_for(lambda s: (e := definition_in(s, "t2v_ft1")) and e["state"] == "removed" and e,
                                what="t2v_ft1 removed", timeout=90)
        assert "tunehub pull t2v_ft1" in entry["note"]
        daemon.wait_for(lambda s: definition_in(s, "t2v_other")["state"] == "ready", what="t2v_other ready", timeout=90)
        disk.run("rm", "t2v_other", "--yes", check=True)  # while it runs: the watcher sees the file go
        daemon.wait_for(lambda s: definition_in(s, "t2v_other")["state"] == "removed", what="t2v_other removed", timeout=90)
        time.sleep(2.0)
        jobs = daemon.client.jobs()
        assert not [j for j in jobs if j["definition_id"] in ("t2v_ft1", "t2v_other") and j["state"] in ("queued", "running")]
        assert not (disk.ckpts / FT1_8).exists() and not (disk.ckpts / OTHER).exists()
        # `tunehub pull ID` lifts the mark (and fetches)
        disk.run("pull", "t2v_ft1", "--all-variants", check=True)
        assert (disk.ckpts / FT1_8).exists()
        daemon.wait_for(lambda s: definition_in(s, "t2v_ft1")["state"] == "ready", what="t2v_ft1 ready again", timeout=90)
    finally:
        daemon.stop()


def test_daemon_marks_update_available_and_updates_with_auto(disk):
    _daemon_home(disk, 'update_interval = "1s"\n')
    disk.run("daemon", "--once", check=False)
    assert (disk.ckpts / FT1_8).exists()
    new8 = os.urandom(300_500)
    disk.commit({FT1_8: new8})
    daemon = DaemonProcess(disk.home.root, disk.env()).start()
    try:
        entry = daemon.wait_for(
            lambda s: (e := definition_in(s, "t2v_ft1")) and e["state"] == "update available" and e,
            what="update available", timeout=90)
        assert entry["update_available"] == [FT1_8]
        assert definition_in(daemon.client.status(), "t2v_base")["state"] == "ready"
    finally:
        daemon.stop()
    assert (disk.ckpts / FT1_8).read_bytes() != new8  # notify only: nothing replaced
    _daemon_home(disk, 'update = "auto"\nkeep_previous = 1\n')
    done = disk.run("daemon", "--once")
    assert (disk.ckpts / FT1_8).read_bytes() == new8, done.stdout + done.stderr
    assert (disk.ckpts / f".{FT1_8}.tunehub-previous").exists()  # keep_previous = 1
