"""A cascade's wall time follows its average MFLOPs: batches of 64 test images, CPU, one thread.

The cascade (a file from ``mutualnet cascade``) runs through :class:`~mutualnet.deploy.AdaptiveNet` in cascade mode
(each step only on the images no earlier step was sure of) and the full configuration (widest, highest
resolution) runs on the same batches, alternated round by round (benchmarks/_common.py). The MFLOPs ratio
predicts the cascade's time as ``full time x cascade's average MFLOPs on these images / full MFLOPs``; printed:
measured / predicted, per runtime. Goal: <= 1.3x.

    python benchmarks/bench_cascade.py --checkpoint runs/demo/search/calibrated.pt --cascade runs/demo/cascade.json
        [--batch 64] [--batches 8] [--repeats 10] [--runtimes eager,onnxruntime]
"""

from __future__ import annotations

import argparse

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
        net, full_net = (AdaptiveNet.from_checkpoint(ckpt, runtime=runtime) for _ in range(2))
        full = full_net.config  # the widest at the highest resolution
        net.set_cascade(cascade)
        stops = torch.cat([net.run_cascade(x).stop for x in batches])  # also builds every runner once
        full_net.logits(batches[0])
        mflops = float(cascade.cost(stops).mean())

        def run_cascade(net=net) -> None:
            for x in batches:
                net.run_cascade(x)

        def run_full(net=full_net) -> None:
            for x in batches:
                net.logits(x)

        t = rounds({"cascade": run_cascade, "full": run_full}, warmup=2, repeats=args.repeats)
        predicted = mflops / full["mflops"]
        m, lo, hi = ratio(t["cascade"], t["full"])
        per = 1e3 / len(batches)
        print(f"{runtime}: full {full['width']:g}@{full['resolution']} {t['full'].median * per:.2f} ms/batch "
              f"({full['mflops']:.2f} MFLOPs); cascade {t['cascade'].median * per:.2f} ms/batch ({mflops:.2f} MFLOPs "
              f"on average, {len(stops)} images); time ratio {m:.3f} [{lo:.3f}-{hi:.3f}], MFLOPs ratio {predicted:.3f}")
        print(f"{runtime}: cascade time / MFLOPs-predicted time = {m / predicted:.3f}x [{lo / predicted:.3f}-"
              f"{hi / predicted:.3f}] (goal <= 1.3x), n={args.repeats}")


if __name__ == "__main__":
    main()
