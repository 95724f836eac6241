"""What one Silero window costs in each runtime the shared VAD can use, and whether they agree.

- native: livekit's compiled Silero (`livekit-local-inference`), one state per stream,
  one call per window: what `SharedVAD` runs by default.
- onnx: the plugin's ONNX session through `BatchModel`, alone (B=1) and batched
  (B=8/25/50 streams per call): what `SharedVAD(runtime="onnx")` runs.

CPU is the whole process's per window (one timed loop per setting, after a warm-up), so
threads a runtime starts would count too. Agreement: both runtimes over every bundled
speech clip with silence around it; the largest difference in probability and how many
windows fall on different sides of the activation threshold (0.5).

    PYTHONPATH=src .venv/bin/python bench/vad_cost.py      # ~15 s
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from benchkit import command_line, machine_info, now_iso, write_result
from rich.console import Console
from rich.table import Table

BATCHES = (1, 8, 25, 50)
console = Console()


def _speech_windows(seed: int, count: int, window: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(window) * 3000).astype(np.int16) for _ in range(count)]


def cost(seconds: float) -> dict[str, Any]:
    """CPU microseconds per window: native, then ONNX at each batch size."""
    from livekit.plugins.silero import onnx_model

    from openrtc.vad.model import BatchModel
    from openrtc.vad.native import NativeModel

    out: dict[str, Any] = {}
    native = NativeModel()
    slots = [native.allocate() for _ in range(25)]
    windows = _speech_windows(1, len(slots), native.window)
    out["native"] = _per_window(lambda: native.run(slots, windows), len(slots), seconds)
    session = onnx_model.new_inference_session(True)
    for b in BATCHES:
        model = BatchModel(session)
        rows = [model.allocate() for _ in range(b)]
        batch = _speech_windows(2, b, model.window)
        out[f"onnx B={b}"] = _per_window(lambda m=model, r=rows, w=batch: m.run(r, w), b, seconds)
    return out


def _per_window(call: Any, windows: int, seconds: float) -> dict[str, float]:
    for _ in range(20):
        call()
    runs = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - wall0 < seconds:
        call()
        runs += 1
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    n = runs * windows
    return {"cpu_us": round(1e6 * cpu / n, 1), "wall_us": round(1e6 * wall / n, 1), "windows": n}


def agreement() -> dict[str, Any]:
    from livekit.plugins.silero import onnx_model

    from openrtc.simulation.media import speech_clips
    from openrtc.vad.model import BatchModel
    from openrtc.vad.native import NativeModel

    onnx, native = BatchModel(onnx_model.new_inference_session(True)), NativeModel()
    worst, flips, total = 0.0, 0, 0
    for clip in speech_clips():
        pad = np.zeros(8000, dtype=np.int16)
        pcm = np.concatenate([pad, clip.samples, pad, pad])
        a, b = onnx.allocate(), native.allocate()
        for i in range(0, len(pcm) - onnx.window + 1, onnx.window):
            w = pcm[i : i + onnx.window]
            p, q = float(onnx.run([a], [w])[0]), float(native.run([b], [w])[0])
            worst = max(worst, abs(p - q))
            flips += (p >= 0.5) != (q >= 0.5)
            total += 1
        onnx.release(a)
        native.release(b)
    return {"windows": total, "max_abs_difference": worst, "threshold_flips": flips}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="timed loop per setting")
    a = ap.parse_args(argv)
    started = time.monotonic()
    runs = cost(a.seconds)
    agree = agreement()
    table = Table(title="Silero VAD: CPU per window")
    for col in ("runtime", "CPU us/window", "wall us/window"):
        table.add_column(col)
    for name, r in runs.items():
        table.add_row(name, str(r["cpu_us"]), str(r["wall_us"]))
    console.print(table)
    console.print(
        f"native vs ONNX over the bundled clips: {agree['windows']} windows, largest "
        f"difference {agree['max_abs_difference']:.1e}, {agree['threshold_flips']} on "
        "different sides of 0.5"
    )
    path = write_result(
        "vad",
        {
            "benchmark": "vad",
            "date": now_iso(),
            "machine": machine_info(),
            "command": command_line(),
            "duration_s": round(time.monotonic() - started, 1),
            "runs": runs,
            "agreement": agree,
        },
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
