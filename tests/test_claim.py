"""The experiment claim: exclusive under races, stale by a dead pid or an old heartbeat."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from smsweep.engines import claim


def _write_claim(directory: Path, **fields) -> Path:
    """A claim as another driver would have left it."""
    defaults = {"host": "elsewhere", "pid": 1, "started": time.time(), "token": "theirs"}
    path = directory / claim.CLAIM_FILE
    path.write_text(json.dumps(defaults | fields))
    return path


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _this_host() -> dict:
    held = claim._this_process()
    return {"host": held.host, "boot_id": held.boot_id, "pid_namespace": held.pid_namespace}


def test_create_makes_the_directory_and_names_this_process(tmp_path):
    directory = tmp_path / "storage" / "sweep"
    with claim.create(directory) as held:
        holder = claim.read(directory)
        assert holder == held.holder and holder.pid == os.getpid()
        assert claim.stale_reason(holder) is None
        assert f"pid {os.getpid()}" in holder.describe()
        assert sorted(p.name for p in directory.iterdir()) == [claim.CLAIM_FILE]
    assert list(directory.iterdir()) == [], "release removes the claim"


def test_create_refuses_an_existing_directory_and_writes_nothing(tmp_path):
    (tmp_path / "sweep").mkdir()
    with pytest.raises(FileExistsError):
        claim.create(tmp_path / "sweep")
    assert list((tmp_path / "sweep").iterdir()) == []


def test_of_many_threads_creating_at_once_exactly_one_wins(tmp_path):
    start, outcomes = threading.Barrier(16), []

    def race() -> None:
        start.wait()
        try:
            outcomes.append(claim.create(tmp_path / "sweep"))
        except FileExistsError:
            outcomes.append(None)

    threads = [threading.Thread(target=race) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [held for held in outcomes if held is not None]
    assert len(outcomes) == 16 and len(winners) == 1
    assert claim.read(tmp_path / "sweep").token == winners[0].holder.token
    winners[0].release()


def _take_in_a_process(directory: str, start, done, results) -> None:
    start.wait()
    try:
        held = claim.take(Path(directory))
        results.put(("won", os.getpid(), held.took_over))
    except claim.Held as refused:
        held = None
        results.put(("held", refused.holder.pid, str(refused)))
    done.wait()  # the winner stays alive until every process has looked
    if held is not None:
        held.release()


def test_of_many_processes_taking_over_a_stale_claim_exactly_one_wins(tmp_path):
    _write_claim(tmp_path, pid=_dead_pid(), token="dead", **_this_host())
    context = multiprocessing.get_context("spawn")
    count = 6
    start, done, results = context.Barrier(count), context.Barrier(count), context.Queue()
    processes = [
        context.Process(target=_take_in_a_process, args=(str(tmp_path), start, done, results))
        for _ in range(count)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    winners = [outcome for outcome in outcomes if outcome[0] == "won"]
    assert len(winners) == 1, outcomes
    winner_pid = winners[0][1]
    assert "has ended" in winners[0][2]
    refused = [outcome for outcome in outcomes if outcome[0] == "held"]
    assert all(pid == winner_pid for _, pid, _ in refused), outcomes
    assert all(f"pid {winner_pid}" in message for _, _, message in refused)
    assert not (tmp_path / claim.CLAIM_FILE).exists(), "the winner released it"


def test_a_claim_on_this_host_whose_process_ended_is_taken_over(tmp_path):
    pid = _dead_pid()
    _write_claim(tmp_path, pid=pid, token="dead", **_this_host())
    assert claim.stale_reason(claim.read(tmp_path)) == f"its process {pid} on this host has ended"
    with claim.take(tmp_path) as held:
        assert held.took_over is not None and f"pid {pid}" in held.took_over
        assert claim.read(tmp_path).pid == os.getpid()


def test_a_pid_now_used_by_another_process_is_not_the_holder(tmp_path):
    if claim._this_process().pid_started == "":
        pytest.skip("no /proc: process start times are unknown here")
    _write_claim(tmp_path, pid=os.getpid(), pid_started="1", **_this_host())
    assert "has ended" in claim.stale_reason(claim.read(tmp_path))


def test_a_live_holder_on_this_host_is_refused_by_name(tmp_path):
    with claim.create(tmp_path / "sweep") as held:
        with pytest.raises(claim.Held, match=rf"pid {os.getpid()} on .*smsweep resume"):
            claim.take(tmp_path / "sweep")
        with pytest.raises(claim.Held):
            claim.check_free(tmp_path / "sweep")
        assert claim.read(tmp_path / "sweep").token == held.holder.token


def test_a_claim_from_another_pid_namespace_of_this_host_counts_by_its_heartbeat(tmp_path):
    """A container with this host's name: its pid says nothing about a process here."""
    here = _this_host() | {"pid_namespace": "pid:[another]"}
    _write_claim(tmp_path, pid=_dead_pid(), **here)
    with pytest.raises(claim.Held):
        claim.take(tmp_path)


def test_another_hosts_claim_is_stale_only_once_its_heartbeat_is_old(tmp_path):
    path = _write_claim(tmp_path, host="node-7", pid=os.getpid())  # that pid means nothing here
    with pytest.raises(claim.Held, match=r"pid .* on node-7"):
        claim.take(tmp_path)
    old = time.time() - claim.STALE_AFTER_S - 5
    os.utime(path, (old, old))  # the last heartbeat, as the file server stamped it
    claim.check_free(tmp_path)
    with claim.take(tmp_path) as held:
        assert "heartbeat is" in held.took_over and "node-7" in held.took_over


def test_the_heartbeat_keeps_the_claim_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(claim, "HEARTBEAT_S", 0.05)
    with claim.create(tmp_path / "sweep") as held:
        old = time.time() - 1000
        os.utime(held.path.path, (old, old))
        deadline = time.monotonic() + 10
        while held.path.path.stat().st_mtime < time.time() - 100:
            assert time.monotonic() < deadline, "the heartbeat never touched the claim"
            time.sleep(0.05)


def test_release_leaves_a_claim_that_another_driver_took_over(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(claim, "HEARTBEAT_S", 0.05)
    held = claim.create(tmp_path / "sweep")
    held.path.path.unlink()
    _write_claim(tmp_path / "sweep", token="newer")
    time.sleep(0.3)
    held.release()
    assert claim.read(tmp_path / "sweep").token == "newer"
    assert "no longer holds" in capsys.readouterr().err


def test_an_abandoned_takeover_lock_does_not_block_takeovers_for_ever(tmp_path):
    _write_claim(tmp_path, pid=_dead_pid(), token="dead", **_this_host())
    lock = tmp_path / (claim.CLAIM_FILE + ".takeover")
    lock.write_text("")
    old = time.time() - claim.TAKEOVER_STALE_S - 5
    os.utime(lock, (old, old))
    with claim.take(tmp_path) as held:
        assert held.took_over is not None
    assert not lock.exists()


def test_an_unreadable_claim_counts_by_its_heartbeat(tmp_path):
    (tmp_path / claim.CLAIM_FILE).write_text("{not json")
    with pytest.raises(claim.Held):
        claim.take(tmp_path)
