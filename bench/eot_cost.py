"""What one end-of-turn prediction costs: CPU and wall time of livekit's native model.

Each setting runs in a fresh process (the native model reads its settings when it
loads): livekit's default, and `EOT_PARALLELISM=none` (one thread), an option the
native library reads from the environment. Every prediction is on 1.2 s of the bundled
speech (the longest clip the model takes; shorter clips are padded to it) and, once, on
0.5 s. CPU is the whole process's (the threads the model starts for a prediction
included), per prediction; of it, the calling thread's own share, and the share of
threads that started and exited within the runs (`openrtc.ops.thread_cpu`'s
`short_lived`: the model's helpers, which the density run can then attribute).

    PYTHONPATH=src .venv/bin/python bench/eot_cost.py      # ~10 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from benchkit import command_line, machine_info, now_iso, write_result
from rich.console import Console
from rich.table import Table

SETTINGS = {"default": None, "EOT_PARALLELISM=none": "none"}
console = Console()


def clip_probabilities() -> dict[str, Any]:
    """What the model says of each bundled clip 200 ms into the silence after it (when
    livekit asks), beside livekit's English threshold: under it, livekit waits its maximum
    endpointing delay before the agent answers, and the simulated caller hears that."""
    import numpy as np
    from livekit.agents import inference
    from livekit.local_inference import EOT, EOT_MAX_SAMPLES

    from openrtc.simulation.media import speech_clips

    model = EOT()
    detector = inference.TurnDetector(version="v1-mini")
    threshold = asyncio.run(detector.unlikely_threshold(None))  # None: English
    out: dict[str, Any] = {"threshold_en": threshold, "clips": {}}
    for clip in speech_clips():
        pcm = np.concatenate([clip.samples, np.zeros(3200, dtype=np.int16)])[-EOT_MAX_SAMPLES:]
        out["clips"][clip.name] = round(float(model.predict(pcm)), 3)
    return out


def measure(predictions: int) -> dict[str, Any]:
    """In this process: load the model, warm it, time `predictions` runs per clip length."""
    import numpy as np
    from livekit.local_inference import EOT, EOT_MAX_SAMPLES, init_eot

    from openrtc.ops.thread_cpu import ThreadCPU
    from openrtc.simulation.media import speech_clips

    speech = np.concatenate([c.samples for c in speech_clips()])[:EOT_MAX_SAMPLES]
    threads = ThreadCPU()
    init_eot()
    model = EOT()
    out: dict[str, Any] = {}
    for label, clip in (("1.2 s", speech), ("0.5 s", speech[: EOT_MAX_SAMPLES * 5 // 12])):
        for _ in range(3):
            model.predict(clip)
        parts0 = threads.read() or {}
        wall0, cpu0, own0 = time.perf_counter(), time.process_time(), time.thread_time()
        for _ in range(predictions):
            model.predict(clip)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        own = time.thread_time() - own0
        parts1 = threads.read() or {}
        short = parts1.get("short_lived", 0.0) - parts0.get("short_lived", 0.0)
        out[label] = {
            "cpu_ms": round(1000 * cpu / predictions, 1),
            "wall_ms": round(1000 * wall / predictions, 1),
            "calling_thread_cpu_ms": round(1000 * own / predictions, 1),
            "short_lived_cpu_ms": round(1000 * short / predictions, 1),
        }
    return out


def run_setting(value: str | None, predictions: int) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("EOT_PARALLELISM", None)
    if value is not None:
        env["EOT_PARALLELISM"] = value
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(predictions)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--predictions", type=int, default=40, help="timed runs per clip length")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child is not None:
        print(json.dumps(measure(a.child)))
        return
    started = time.monotonic()
    runs = {name: run_setting(value, a.predictions) for name, value in SETTINGS.items()}
    clips = clip_probabilities()
    table = Table(title="End-of-turn model: cost per prediction")
    for col in ("setting", "clip", "CPU ms", "wall ms", "calling thread ms", "short-lived ms"):
        table.add_column(col)
    for name, by_clip in runs.items():
        for clip, r in by_clip.items():
            table.add_row(
                name,
                clip,
                str(r["cpu_ms"]),
                str(r["wall_ms"]),
                str(r["calling_thread_cpu_ms"]),
                str(r["short_lived_cpu_ms"]),
            )
    console.print(table)
    below = [n for n, p in clips["clips"].items() if p < clips["threshold_en"]]
    console.print(
        f"200 ms after each bundled clip: {clips['clips']}; livekit's English threshold "
        f"{clips['threshold_en']}: under it for {len(below)} of {len(clips['clips'])}"
    )
    path = write_result(
        "eot",
        {
            "benchmark": "eot",
            "date": now_iso(),
            "machine": machine_info(),
            "command": command_line(),
            "duration_s": round(time.monotonic() - started, 1),
            "predictions_per_clip": a.predictions,
            "runs": runs,
            "clip_probabilities": clips,
        },
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
