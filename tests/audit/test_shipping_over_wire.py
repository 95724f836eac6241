"""Audit records shipped off real worker processes: a collector that is down, a worker
SIGKILLed with a full spool, and a stdout stream read back from a mixed log."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from openrtc.deploy.rehearsal.workers import WorkerProcess
from openrtc.devserver import DispatchServer
from tests.harness import wait_until

from .receiver import Receiver

AGENTS = Path("examples/agents")


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openrtc.cli.main", "audit", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def file_records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def shipping_env(tmp_path: Path, receiver: Receiver) -> dict[str, str]:
    token = tmp_path / "token"
    token.write_text(receiver.token + "\n")
    return {
        "OPENRTC_AUDIT_URL": receiver.url,
        "OPENRTC_AUDIT_TOKEN_FILE": str(token),
        "OPENRTC_AUDIT_SPOOL_DIR": str(tmp_path / "spool"),
        "OPENRTC_AUDIT_RETRY_MAX": "1",
        "OPENRTC_AUDIT_FLUSH_TIMEOUT": "60",
    }


async def test_a_collector_down_20s_mid_rehearsal_loses_nothing(tmp_path: Path) -> None:
    receiver = Receiver("t0ken-" + os.urandom(8).hex())
    await receiver.start()
    workdir = tmp_path / "work"
    env = {**os.environ, **shipping_env(tmp_path, receiver)}
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "openrtc.cli.main", "rehearse", str(AGENTS), "--json"],
        *["--workers", "2", "--calls", "30", "--workdir", str(workdir)],
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_until(lambda: len(receiver.workers()) >= 2, timeout=90)
        received_before = len(receiver.order)
        await receiver.stop()
        await asyncio.sleep(20)
        assert proc.returncode is None, "the rehearsal ended during the outage"
        await receiver.start()
        out, err = await asyncio.wait_for(proc.communicate(), 240)
    finally:
        if proc.returncode is None:
            proc.kill()
        await receiver.stop()
    assert proc.returncode == 0, err.decode()[-3000:]
    assert json.loads(out)["audit_chain_ok"] is True

    # every record of every worker's own audit file arrived, once, in order
    files = sorted(p for p in workdir.glob("audit-v*.jsonl"))
    assert len(files) == 4
    assert receiver.conflicts == []
    assert len(receiver.order) > received_before
    streams = {w: receiver.records(w) for w in receiver.workers()}
    assert len(streams) == 4
    for file in files:
        written = file_records(file)
        matching = [w for w, records in streams.items() if records == written]
        assert len(matching) == 1, f"{file.name}: no stream received exactly its records"
        seqs = [r["seq"] for r in written]
        assert seqs == list(range(1, len(seqs) + 1))
    # the outage itself is on record in the file sink, and resolved
    events = [r["event"] for f in files for r in file_records(f)]
    assert "audit.sink_failed" in events and "audit.sink_recovered" in events
    failed = [r for f in files for r in file_records(f) if r["event"] == "audit.sink_failed"]
    assert {r["reason"] for r in failed} <= {"unreachable", "connection", "timeout"}

    collected = receiver.write(tmp_path / "collected.ndjson")
    checked = verify(collected)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("ok: worker ") == 4
    assert all("worker.stopped" in [r["event"] for r in rs] for rs in streams.values())


def spool_lines(spool: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for segment in sorted(spool.glob("slot-*/*.jsonl"))
        for line in segment.read_text().splitlines()
    ]


async def test_a_sigkilled_worker_resends_its_spool_after_restart(
    tmp_path: Path, devserver: DispatchServer
) -> None:
    receiver = Receiver("k1ll-" + os.urandom(8).hex())  # not listening yet: down
    env = {
        "LIVEKIT_URL": devserver.ws_url,
        "LIVEKIT_API_KEY": devserver.api_key,
        "LIVEKIT_API_SECRET": devserver.api_secret,
        **shipping_env(tmp_path, receiver),
        "OPENRTC_AUDIT_FLUSH_TIMEOUT": "20",
    }
    first = WorkerProcess.release("first", "v1", AGENTS, tmp_path, env)
    await first.start()
    try:
        await first.wait_registered(60)
        await wait_until(lambda: len(spool_lines(tmp_path / "spool")) >= 2, timeout=20)
        await first.kill()
    finally:
        await first.kill()
    spooled = spool_lines(tmp_path / "spool")
    assert [e["record"]["event"] for e in spooled][:2] == ["worker.started", "worker.accepting"]
    dead_worker = spooled[0]["worker"]

    await receiver.start()
    second = WorkerProcess.release("second", "v1", AGENTS, tmp_path, env)
    await second.start()
    try:
        await second.wait_registered(60)
        await wait_until(lambda: len(receiver.records(dead_worker)) >= len(spooled), timeout=30)
        second.terminate()
        assert await second.wait_exit(60) == 0
    finally:
        await second.kill()
        await receiver.stop()
    assert receiver.records(dead_worker) == [e["record"] for e in spooled]
    assert receiver.conflicts == []
    assert len(receiver.workers()) == 2
    assert receiver.records(receiver.workers()[1])[-1]["event"] == "worker.stopped"
    assert spool_lines(tmp_path / "spool") == []  # acknowledged, so nothing is left behind
    checked = verify(receiver.write(tmp_path / "collected.ndjson"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("ok: worker ") == 2
    assert "flushed" in second.log_path.read_text()


async def test_a_stdout_stream_of_two_workers_mixed_with_logs_verifies_per_worker(
    tmp_path: Path, devserver: DispatchServer
) -> None:
    env = {
        "LIVEKIT_URL": devserver.ws_url,
        "LIVEKIT_API_KEY": devserver.api_key,
        "LIVEKIT_API_SECRET": devserver.api_secret,
        "OPENRTC_AUDIT_STDOUT": "1",
    }
    workers = [WorkerProcess.release(f"w{i}", "v1", AGENTS, tmp_path, env) for i in (1, 2)]
    for w in workers:  # stdout and stderr of both in one file
        w.log_path = tmp_path / "mixed.log"
    try:
        for w in workers:
            await w.start()
        for w in workers:
            await w.wait_registered(60)
        started = time.monotonic()
        for w in workers:
            w.terminate()
        assert [await w.wait_exit(60) for w in workers] == [0, 0]
        assert time.monotonic() - started < 60
    finally:
        for w in workers:
            await w.kill()
    mixed = tmp_path / "mixed.log"
    lines = mixed.read_text().splitlines()
    audit = [line for line in lines if '"openrtc_audit":1' in line]
    assert len(audit) >= 8 and len(lines) - len(audit) >= 4  # ordinary log lines in between
    checked = verify(mixed)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("ok: worker ") == 2
    assert checked.stdout.count("last event worker.stopped") == 2

    # an edited record breaks its own worker's chain, and only that one
    victim = json.loads(audit[1])
    victim["record"]["result"] = "edited"
    edited = [json.dumps(victim) if line == audit[1] else line for line in lines]
    (tmp_path / "edited.log").write_text("\n".join(edited) + "\n")
    broken = verify(tmp_path / "edited.log")
    assert broken.returncode == 1
    assert f"BROKEN: worker {victim['worker']}" in broken.stdout
    assert "was modified" in broken.stdout
    assert broken.stdout.count("ok: worker ") == 1

    # so does a record deleted from the middle
    gone = [line for line in lines if line != audit[2]]
    (tmp_path / "gone.log").write_text("\n".join(gone) + "\n")
    missing = verify(tmp_path / "gone.log")
    assert missing.returncode == 1 and "a record is missing" in missing.stdout
