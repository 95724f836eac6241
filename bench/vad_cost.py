"""What one Silero window costs in each runtime the shared VAD can use, and whether they agree.

- native: livekit's compiled Silero (`livekit-local-inference`), one state per stream,
  one call per window: what `SharedVAD` runs by default.
- onnx: the plugin's ONNX session through `BatchModel`, alone (B=1) and batched
  (B=8/25/50 streams per call): what `SharedVAD(runtime="onnx")` runs.

CPU is the whole process's per window (one timed loop per setting, after a warm-up), so
threads a runtime starts would count too. Agreement: both runtimes over every bundled
speech clip with silence around it; the largest difference in probability and how many
windows fall on different sides of the activation threshold (0.5).

Replay: whether a native state (which cannot be read or copied) can be rebuilt by feeding
a fresh one the last K windows; what folding two streams into one state would need the
moment they part.

Beside a busy event loop: the main thread stands in for a loaded worker's loop (pure
Python work, a short sleep between slices, as a loop that is busy most of the time);
every 32 ms it asks for one window of each of `--streams` streams, either run on a
thread (how long until the answer is back) or inline (how long the loop is held). A
runtime that releases the GIL for each window waits, on a thread, for the loop to hand
it back each time.

    PYTHONPATH=src .venv/bin/python bench/vad_cost.py      # ~40 s
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
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


REPLAY_WINDOWS = (32, 128, 512)
"""How much recent audio a fresh native state is given before it is compared (1 s to 16 s)."""


def replay() -> dict[str, Any]:
    """Whether a native state can be rebuilt from recent audio, the only way to copy one.

    Over a minute of the bundled clips with quiet noise between them: a fresh state fed
    the last K windows, then the next 400, against the state that heard everything from
    the start; the largest difference in probability and the windows that land on the
    other side of 0.5, over starting points every 100 windows.
    """
    from livekit.local_inference import VAD, VAD_WINDOW_SAMPLES

    from openrtc.simulation.media import speech_clips

    clips = [c.samples for c in speech_clips()]
    rng = np.random.default_rng(3)
    parts = []
    for i in range(24):
        parts.append(clips[i % len(clips)])
        gap = int(16000 * rng.uniform(0.3, 2.0))
        parts.append((rng.standard_normal(gap) * 30).astype(np.int16))
    pcm = np.concatenate(parts)
    size = VAD_WINDOW_SAMPLES
    windows = [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]
    heard_all = VAD()
    full = np.array([heard_all.predict(w) for w in windows])
    out: dict[str, Any] = {"windows": len(windows)}
    for k in REPLAY_WINDOWS:
        worst, flips, compared = 0.0, 0, 0
        for start in range(max(k, 100), len(windows) - 400, 100):
            rebuilt = VAD()
            for w in windows[start - k : start]:
                rebuilt.predict(w)
            got = np.array([rebuilt.predict(w) for w in windows[start : start + 400]])
            want = full[start : start + 400]
            worst = max(worst, float(np.abs(got - want).max()))
            flips += int(((got >= 0.5) != (want >= 0.5)).sum())
            compared += len(got)
        out[str(k)] = {
            "max_abs_difference": round(worst, 4),
            "threshold_flips": flips,
            "compared": compared,
        }
    return out


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def beside_a_busy_loop(streams: int, seconds: float) -> dict[str, Any]:
    """Per tick: the time until all `streams` windows are answered, three ways."""
    from livekit.plugins.silero import onnx_model

    from openrtc.vad.model import BatchModel
    from openrtc.vad.native import NativeModel

    out: dict[str, Any] = {}
    for name in ("onnx on a thread", "native on a thread", "native inline"):
        model: Any = (
            BatchModel(onnx_model.new_inference_session(True))
            if name.startswith("onnx")
            else NativeModel()
        )
        slots = [model.allocate() for _ in range(streams)]
        windows = _speech_windows(3, streams, model.window)
        ticks: list[float] = []
        with ThreadPoolExecutor(max_workers=1) as pool:
            started = time.perf_counter()
            next_tick = started
            while time.perf_counter() - started < seconds:
                if time.perf_counter() < next_tick:
                    _spin(0.0006)  # the loop's own work, then a moment in select
                    time.sleep(0.0004)
                    continue
                next_tick += 0.032
                t0 = time.perf_counter()
                if name == "native inline":
                    model.run(slots, windows)
                else:
                    future = pool.submit(model.run, slots, windows)
                    while not future.done():
                        _spin(0.001)
                ticks.append(time.perf_counter() - t0)
        ticks.sort()
        out[name] = {
            "tick_p50_ms": round(1000 * ticks[len(ticks) // 2], 1),
            "tick_max_ms": round(1000 * ticks[-1], 1),
            "ticks": len(ticks),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="timed loop per setting")
    ap.add_argument("--streams", type=int, default=150, help="streams beside the busy loop")
    ap.add_argument("--busy-seconds", type=float, default=6.0, help="per way, beside the loop")
    a = ap.parse_args(argv)
    started = time.monotonic()
    runs = cost(a.seconds)
    agree = agreement()
    busy = beside_a_busy_loop(a.streams, a.busy_seconds)
    rebuilt = replay()
    table = Table(title="Silero VAD: CPU per window")
    for col in ("runtime", "CPU us/window", "wall us/window"):
        table.add_column(col)
    for name, r in runs.items():
        table.add_row(name, str(r["cpu_us"]), str(r["wall_us"]))
    console.print(table)
    ticks = Table(title=f"Beside a busy loop: {a.streams} windows every 32 ms")
    for col in ("way", "tick p50 ms", "tick max ms"):
        ticks.add_column(col)
    for name, r in busy.items():
        ticks.add_row(name, str(r["tick_p50_ms"]), str(r["tick_max_ms"]))
    console.print(ticks)
    console.print(
        f"native vs ONNX over the bundled clips: {agree['windows']} windows, largest "
        f"difference {agree['max_abs_difference']:.1e}, {agree['threshold_flips']} on "
        "different sides of 0.5"
    )
    for k in REPLAY_WINDOWS:
        r = rebuilt[str(k)]
        console.print(
            f"native state rebuilt from the last {k} windows: largest difference "
            f"{r['max_abs_difference']:.2f}, {r['threshold_flips']} of {r['compared']} "
            "windows on the other side of 0.5"
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
            "beside_a_busy_loop": {"streams": a.streams, "ways": busy},
            "replay": rebuilt,
        },
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
