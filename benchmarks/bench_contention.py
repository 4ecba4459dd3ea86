"""Training on a busy machine: a short real training run, quiet and with 1 or 2 competing busy processes.

Each run is ``mutualnet train --config CONFIG --set run.max_steps=STEPS`` in a fresh process (OpenMP's wait
policy is fixed when torch loads, so it cannot change inside one process); its time per iteration is read
from ``metrics.jsonl`` (the median over the iterations after the first). The threading setups:

- ``before``: what torch does on its own, OpenMP threads spin at barriers (libgomp's default spin count,
  set explicitly with ``GOMP_SPINCOUNT=300000`` so that mutualnet leaves it alone), one thread per core;
- ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` alone, one thread per core;
- ``now``: mutualnet's default (``OMP_WAIT_POLICY=PASSIVE`` set before torch loads, and no more threads than
  cores free at the start: ``mutualnet.threads``);
- ``torch_first`` (not run by default): ``import torch`` before mutualnet, as a library user may, so OpenMP
  spins and only the free-core cap applies;
- ``one_thread``: ``--set run.threads=1``.

The competitors are ``python -c "while True: pass"`` started with ``setsid``: the kernel shares the CPU per
session (autogroup), so a competitor in our own session would hide the collapse; each training run is started
in a session of its own too, as from a terminal. Setups alternate within each round and load; every time is
divided by the same round's quiet ``1 thread`` time, and the per-round ratios are printed as median [min-max],
n rounds. Goal: ``now`` under one competitor <= 1.5x, and ``now`` quiet within 3% of ``before`` quiet.

    python benchmarks/bench_contention.py [--config configs/resnet20_fashion_mnist.yaml] [--steps 10]
        [--rounds 3] [--competitors 0,1,2] [--setups before,passive,now,one_thread] [--set KEY=VALUE]
        [--cap 240]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _common import load_text

ROOT = Path(__file__).resolve().parents[1]
SPIN = "while True: pass"
TORCH_FIRST = "import sys, torch; from mutualnet.cli import main; sys.exit(main(sys.argv[1:]))"
SETUPS = {  # name -> (extra environment, python prefix, extra --set)
    "before": ({"GOMP_SPINCOUNT": "300000"}, ["-m", "mutualnet"], []),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, ["-m", "mutualnet"], []),
    "now": ({}, ["-m", "mutualnet"], []),
    "torch_first": ({}, ["-c", TORCH_FIRST], []),
    "one_thread": ({}, ["-m", "mutualnet"], ["run.threads=1"]),
}
CLEARED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


@contextlib.contextmanager
def competitors(n: int):
    """``n`` busy processes, each in its own session (``setsid``), for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", SPIN], start_new_session=True) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def run_once(setup: str, config: str, steps: int, work: Path, overrides: list[str], cap: float) -> tuple[float, bool]:
    """Seconds per training iteration of one short run in a fresh process, and whether ``cap`` cut it short.

    The median over the iterations after the first (warm-up); a run stopped at ``cap`` seconds gives the
    median of the iterations it finished (a lower bound of the real time: the unfinished one is left out).
    """
    extra_env, prefix, sets = SETUPS[setup]
    env = {k: v for k, v in os.environ.items() if k not in CLEARED} | extra_env
    out = Path(tempfile.mkdtemp(dir=work))
    args = ["train", "--config", config]
    for s in [f"run.out={out / 'run'}", f"run.max_steps={steps}", "run.progress=false", "run.save_every=0",
              "run.val_every=0", "run.tensorboard=false", *overrides, *sets]:
        args += ["--set", s]
    proc = subprocess.Popen([sys.executable, *prefix, *args], env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # its own session, as from a terminal
    try:
        _, err = proc.communicate(timeout=cap)
        capped = False
        if proc.returncode:
            raise RuntimeError(f"{setup} failed: {err.decode()[-2000:]}")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        capped = True
    batch = yaml.safe_load((out / "run" / "config.yaml").read_text())["data"]["batch_size"]
    metrics = out / "run" / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    its = [batch / r["img_s"] for r in rows if r.get("kind") == "train"]
    if not its:
        return cap, True  # not one iteration within the cap
    return statistics.median(its[1:] or its), capped


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/resnet20_fashion_mnist.yaml")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--competitors", default="0,1,2")
    p.add_argument("--setups", default="before,passive,now,one_thread")
    p.add_argument("--cap", type=float, default=240.0, help="stop a run after this many seconds (a lower bound)")
    p.add_argument("--set", action="append", default=[], help="a config override for every run (repeatable)")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed benchmark still stops its competitors
    loads = [int(n) for n in args.competitors.split(",")]
    setups = args.setups.split(",")
    if "one_thread" not in setups or 0 not in loads:
        p.error("the reference is one_thread with 0 competitors: keep both")
    print(f"== training under contention: {args.config} {' '.join(args.set)}, {args.steps} iterations per run, "
          f"{os.cpu_count()} cores; "
          f"start: {load_text()}", flush=True)
    times: dict[tuple[str, int], list[float]] = {(s, n): [] for s in setups for n in loads}
    capped: set[tuple[str, int]] = set()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for n in loads:
                with competitors(n):
                    for s in setups:
                        t, cut = run_once(s, args.config, args.steps, Path(tmp), args.set, args.cap)
                        times[s, n].append(t)
                        if cut:
                            capped.add((s, n))
                        print(f"  round {r + 1}, {n} competitor(s), {s:11s}: {'>' if cut else ''}{t:.3f} "
                              f"s/iteration ({load_text()})", flush=True)
    ref = times["one_thread", 0]
    print(f"end: {load_text()}")
    print("seconds per iteration, median [min-max]; ratio to the same round's quiet 1-thread time, median "
          f"[min-max], n={args.rounds}; '>': a run stopped at --cap {args.cap:g} s, a lower bound")
    for n in loads:
        for s in setups:
            t = times[s, n]
            q = [a / b for a, b in zip(t, ref)]
            mark = ">" if (s, n) in capped else " "
            print(f"{n} competitor(s)  {s:11s} {mark}{statistics.median(t):7.3f} [{min(t):.3f}-{max(t):.3f}] s  "
                  f"{mark}{statistics.median(q):6.2f}x [{min(q):.2f}-{max(q):.2f}]")
    if "before" in setups and "now" in setups:
        q = [a / b for a, b in zip(times["now", 0], times["before", 0])]
        print(f"quiet: now / before = {statistics.median(q):.3f}x [{min(q):.3f}-{max(q):.3f}] (goal <= 1.03x)")


if __name__ == "__main__":
    main()
