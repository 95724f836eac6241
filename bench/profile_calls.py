"""CPU per live call in a coroutine worker: profile it, or measure it.

The command line of the two CPU tools: `--measure` runs `cpu_measure.py` (CPU per call and
VAD keep-up for several N), `--profile` runs `cpu_profile.py` (py-spy on the worker,
CPU split into components). Both start `cpu_worker.py` through `benchkit.Worker`.

    # where the CPU goes (py-spy is not a project dependency; install it by hand first):
    .venv/bin/pip install py-spy
    PYTHONPATH=src .venv/bin/python bench/profile_calls.py --profile --calls 25 \
        --shared-vad off

    # CPU per call and VAD keep-up for several N, shared VAD on and off:
    PYTHONPATH=src .venv/bin/python bench/profile_calls.py --measure \
        --calls 25,50,75,90,100 --shared-vad on,off

`--measure` prints a line per run and writes bench/results/cpu.json (machine, date and
command included). `--profile` attaches py-spy to the worker for the window and splits
the worker's CPU (per-thread OS accounting) into components by its samples, in cores,
% of a core per call and microseconds per 10 ms of call audio. Every run first waits for
the rest of the machine to go quiet and is retried when other processes took more than
0.25 cores during its window.
"""

from __future__ import annotations

import argparse

from benchkit import pin_source
from cpu_measure import measure
from cpu_profile import profile


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--profile", action="store_true", help="py-spy the worker under load")
    mode.add_argument("--measure", action="store_true", help="CPU per call and VAD keep-up")
    parser.add_argument("--calls", default="25", help="live calls, comma-separated list")
    parser.add_argument("--shared-vad", default="on,off", help="on, off or on,off")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds after the ramp")
    parser.add_argument("--ramp", type=float, default=10.0, help="new calls per second")
    parser.add_argument("--out", help="--profile: where to write py-spy's raw stacks")
    parser.add_argument("--json", help="--measure: results file (default bench/results/cpu.json)")
    args = parser.parse_args(argv)
    try:
        calls = [int(c) for c in args.calls.split(",")]
    except ValueError:
        parser.error(f"--calls takes whole numbers separated by commas, got {args.calls!r}")
    if not calls or min(calls) < 1:
        parser.error(f"--calls needs positive numbers of calls, got {args.calls!r}")
    if not set(args.shared_vad.split(",")) <= {"on", "off"}:
        parser.error(f"--shared-vad takes on, off or on,off; got {args.shared_vad!r}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    print(f"the worker runs openrtc from a copy of src/: {pin_source()}", flush=True)
    if args.profile:
        profile(args)
    else:
        measure(args)


if __name__ == "__main__":
    main()
