"""Where a coroutine worker's CPU goes: py-spy on the worker under N calls (`--profile`).

The run is `cpu_measure.run_calls` (same worker, calls and window); py-spy is attached to
the worker for the window (py-spy is not a project dependency: `.venv/bin/pip install
py-spy` first), and the worker's CPU (per-thread OS accounting) is split into components
by the busy samples of each thread family, in cores, % of a core per call and
microseconds per 10 ms of call audio. The simulated caller's microphone runs inside the
worker (it is part of every call); its share is reported on its own line.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from cpu_measure import QUIET_CORES, SCRATCH, RunResult, describe, run_calls, wait_for_quiet

BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("VAD model (native Silero or ONNX)", ("NativeModel.run", "onnx_model.py", "Session.run")),
    ("end-of-turn model", ("livekit/local_inference", "inference/eot", "openrtc/turn/")),
    (
        "VAD Python (framing, decisions, batching)",
        ("silero/vad.py", "agents/vad.py", "openrtc/vad/"),
    ),
    ("STT stream adapter", ("stt/stream_adapter.py", "stt/stt.py")),
    ("audio recognition", ("voice/audio_recognition.py",)),
    ("agent activity / session", ("voice/agent_activity.py", "voice/agent_session.py")),
    ("room io / audio input", ("voice/io.py", "voice/room_io")),
    ("simulated caller (mic, earpiece)", ("openrtc/simulation/",)),
    ("fake STT/LLM/TTS", ("openrtc/testing/fakes.py", "tts/stream_adapter.py", "tts/tts.py")),
    ("metrics and usage", ("metrics/", "telemetry/", "_on_metrics_collected")),
    ("channels, tee, tasks (aio utils)", ("utils/aio/",)),
    ("audio frames, resampling (livekit.rtc)", ("rtc/audio", "rtc/utils.py")),
    ("executor hops (concurrent.futures, threads)", ("concurrent/futures", "threading.py")),
    ("asyncio event loop", ("asyncio/",)),
)
EOT_NATIVE = "end-of-turn model"
ENDED_THREADS = "threads that ended in the window"
"""CPU of threads gone before the window's end: the end-of-turn model's native workers
(one predict: ~15 ms on the calling thread plus ~28 ms in threads it starts and joins)."""


def bucket(frames: list[str]) -> str:
    stack = ";".join(frames)
    for name, needles in BUCKETS[:2]:
        if any(n in stack for n in needles):
            return name
    if frames[-1].startswith("_WorkItem.run (concurrent/futures/thread.py"):
        return EOT_NATIVE  # a native callable on the default executor: the EOT predict
    for frame in reversed(frames):
        for name, needles in BUCKETS[2:]:
            if any(n in frame for n in needles):
                return name
    return "other"


def _idle(leaf: str) -> bool:
    """Samples py-spy took of a thread waiting: the loop's select, an idle pool thread."""
    return leaf.startswith(("EpollSelector.select", "_worker (concurrent/futures/thread.py"))


def fold(raw: Path) -> dict[str, Counter[str]]:
    """Busy py-spy samples by thread family, then by bucket."""
    out: dict[str, Counter[str]] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        head, *frames = stack.split(";")
        if not frames or _idle(frames[-1]):
            continue
        family = re.sub(r"[_-]?\d+$", "", head.split(": ", 1)[-1])
        out.setdefault(family, Counter())[bucket(frames)] += int(count)
    return out


def attribute(result: RunResult, folded: dict[str, Counter[str]]) -> dict[str, float]:
    """Cores per bucket: each thread family's OS CPU split by its busy py-spy samples."""
    cores: dict[str, float] = {}
    threads: dict[str, float] = result.extra["thread_cores"]
    for family, family_cores in threads.items():
        samples = folded.get(family)
        if not samples or family_cores <= 0:
            continue
        total = sum(samples.values())
        for name, n in samples.items():
            cores[name] = cores.get(name, 0.0) + family_cores * n / total
    ended = result.cpu_cores - sum(threads.values())
    if ended > 0:
        cores[ENDED_THREADS] = ended
    return cores


def profile(args: argparse.Namespace) -> None:
    calls = int(args.calls.split(",")[0])
    shared = args.shared_vad.split(",")[0] == "on"
    SCRATCH.mkdir(parents=True, exist_ok=True)
    raw = Path(args.out) if args.out else SCRATCH / f"profile-{calls}-{args.shared_vad}.txt"

    def spy(pid: int, window: float) -> None:
        subprocess.run(
            [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(window)),
                "--rate",
                "100",
                "--format",
                "raw",
                "--nonblocking",
                "--threads",
                "--output",
                str(raw),
            ],
            check=True,
            capture_output=True,
        )

    for _ in range(3):
        wait_for_quiet()
        result = asyncio.run(
            run_calls(
                calls,
                shared,
                window=args.seconds,
                warmup=args.warmup,
                ramp_per_s=args.ramp,
                during=spy,
            )
        )
        if result.extra["other_load_cores"] < QUIET_CORES:
            break
        print(f"  retrying: {describe(result)}", flush=True)
    cores = attribute(result, fold(raw))
    frames_per_s = calls * 100  # 10 ms frames of caller audio per second, all calls
    print(f"{calls} calls, shared VAD {'on' if shared else 'off'}: {describe(result)}")
    print(f"threads (OS CPU, cores): {result.extra['thread_cores']}")
    print(f"raw stacks: {raw}\n")
    print(f"{'where':46} {'cores':>6} {'%core/call':>10} {'us/10ms frame':>14}")
    for name, c in sorted(cores.items(), key=lambda kv: -kv[1]):
        print(f"{name:46} {c:6.3f} {100 * c / calls:10.3f} {1e6 * c / frames_per_s:14.1f}")
    total = sum(cores.values())
    print(
        f"{'total':46} {total:6.3f} {100 * total / calls:10.3f} {1e6 * total / frames_per_s:14.1f}"
    )
