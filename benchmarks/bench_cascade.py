"""A cascade's wall time follows its average MFLOPs: batches of 64 test images, CPU, one thread.

The cascade (a file from ``mutualnet cascade``) runs through :class:`~mutualnet.deploy.AdaptiveNet` in cascade mode
(each step only on the images no earlier step was sure of), the full configuration (widest, highest resolution)
on the same batches, and each step's configuration alone on the whole batches, alternated round by round
(benchmarks/_common.py). Printed per runtime, for wall and CPU time (on a loaded machine a process waits for a
core most of its wall time; its CPU time is what it computed):

* measured / MFLOPs-predicted, the goal (<= 1.3x): the MFLOPs ratio predicts the cascade's time as
  ``full time x cascade's average MFLOPs on these images / full MFLOPs``;
* the same split in two factors: each step's time per image *alone on the whole batch* against its MFLOPs share
  (narrow, low-resolution configurations do fewer MFLOPs per second than the full one), and the cascade's time
  against what those per-step times predict for the images reaching each step (what splitting the batch, the
  smaller sub-batches and the per-step calls cost).

    python benchmarks/bench_cascade.py --checkpoint runs/demo/search/calibrated.pt --cascade runs/demo/cascade.json
        [--batch 64] [--batches 8] [--repeats 10] [--runtimes eager,onnxruntime]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from _common import header, ratio, rounds
from torch.utils.data import DataLoader

from mutualnet.checkpoint import load_checkpoint, model_from_checkpoint
from mutualnet.data.checkpoint import data_from_checkpoint
from mutualnet.deploy import AdaptiveNet, Cascade


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--cascade", required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=8, help="test batches per round")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runtimes", default="eager,onnxruntime")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    header("cascade vs full configuration, time vs MFLOPs", torch.device("cpu"))

    ckpt = load_checkpoint(args.checkpoint)
    cascade = Cascade.load(args.cascade)
    model = model_from_checkpoint(ckpt)
    crop = max([*((ckpt.get("meta") or {}).get("resolutions") or []), *(s.resolution for s in cascade.steps)])
    loader = DataLoader(data_from_checkpoint(ckpt, model, workers=0).build("val", crop), batch_size=args.batch)
    batches = [x.float() for (x, _), _ in zip(loader, range(args.batches))]
    for runtime in args.runtimes.split(","):
        net, full_net, step_net = (AdaptiveNet.from_checkpoint(ckpt, runtime=runtime) for _ in range(3))
        full = full_net.config  # the widest at the highest resolution
        net.set_cascade(cascade)
        stops = torch.cat([net.run_cascade(x).stop for x in batches])  # also builds every runner once
        full_net.logits(batches[0])
        mflops = float(cascade.cost(stops).mean())
        reach = [float((stops >= k).float().mean()) for k in range(len(cascade.steps))]  # share running step k

        def run_cascade(net=net) -> None:
            for x in batches:
                net.logits(x)

        def run_full(net=full_net) -> None:
            for x in batches:
                net.logits(x)

        def run_step(step, net=step_net) -> Callable[[], None]:
            def go() -> None:
                net.set_config(step.width, step.resolution)
                for x in batches:
                    net.logits(x)
            return go

        fns = {"cascade": run_cascade, "full": run_full} | {f"step{k}": run_step(s) for k, s in
                                                             enumerate(cascade.steps)}
        t = rounds(fns, warmup=2, repeats=args.repeats)
        predicted = mflops / full["mflops"]
        per = 1e3 / len(batches)
        m = ratio(t["cascade"], t["full"])[0]
        print(f"{runtime}: full {full['width']:g}@{full['resolution']} {t['full'].median * per:.2f} ms/batch wall, "
              f"{t['full'].cpu_median * per:.2f} cpu ({full['mflops']:.2f} MFLOPs); cascade "
              f"{t['cascade'].median * per:.2f} ms/batch wall, {t['cascade'].cpu_median * per:.2f} cpu "
              f"({mflops:.2f} MFLOPs on average, {len(stops)} images, share running each step "
              f"{' / '.join(f'{r:.3f}' for r in reach)}); time ratio {m:.3f}, MFLOPs ratio {predicted:.3f}")
        for cpu in (False, True):
            kind = "cpu" if cpu else "wall"
            m, lo, hi = ratio(t["cascade"], t["full"], cpu=cpu)
            steps = [ratio(t[f"step{k}"], t["full"], cpu=cpu)[0] for k in range(len(cascade.steps))]
            by_steps = sum(r * s for r, s in zip(reach, steps))  # full-time units: steps' times, shares reaching
            eff = ", ".join(f"{s.width:g}@{s.resolution} {st / (s.mflops / full['mflops']):.2f}x"
                            for s, st in zip(cascade.steps, steps))
            print(f"{runtime} {kind}: cascade time / MFLOPs-predicted time = {m / predicted:.3f}x [{lo / predicted:.3f}"
                  f"-{hi / predicted:.3f}] (goal <= 1.3x), n={args.repeats} = per-step-time-predicted / MFLOPs-"
                  f"predicted {by_steps / predicted:.3f}x (each step alone on the batch, time per MFLOP vs the full "
                  f"configuration's: {eff}) x cascade / per-step-time-predicted {m / by_steps:.3f}x")


if __name__ == "__main__":
    main()
