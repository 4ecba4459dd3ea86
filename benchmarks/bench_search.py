"""Search: time to build the full query table, and the share spent in BN calibration.

Builds the demo's query table (resnet20_cifar over widths [0.25, 1.0] step 0.05 x {28, 24, 20, 16} = 64
configurations) on real Fashion-MNIST: 2,000 calibration images per configuration, the whole 10,000-image
test set for evaluation. The weights are untrained (accuracy is irrelevant here; cost is the same). Also
compares calibration throughput with a plain forward pass at the same configuration, to show calibration
is dominated by the forward passes.

    python benchmarks/bench_search.py [--val-images 10000] [--width-step 0.05] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import header, ratio_text, rounds

import mutualnet as mn
from mutualnet.calibrate import calibrate, load_images
from mutualnet.data import build_dataset
from mutualnet.data.transforms import resize_batch
from mutualnet.search import build_query_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--val-images", type=int, default=10000)
    p.add_argument("--calib-images", type=int, default=2000)
    p.add_argument("--width-step", type=float, default=0.05)
    p.add_argument("--threads", type=int)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = mn.create_model("resnet20_cifar", in_chans=1, width_range=(0.25, 1.0)).eval()
    val = build_dataset("fashion_mnist", "val", input_size=28)
    calib = build_dataset("fashion_mnist", "train", input_size=28, augment=False)
    header("search: the full query table of the demo", torch.device("cpu"))

    images, _ = load_images(calib, args.calib_images)
    for w, r in [(1.0, 28), (0.25, 16)]:  # calibration and a plain forward of the same images, alternated

        def calibration(w=w, r=r) -> None:
            calibrate(model, images, w, r)

        def forward(w=w, r=r) -> None:
            model.set_width(w)
            with torch.no_grad():
                for i in range(0, len(images), 200):
                    model(resize_batch(images[i:i + 200], r))

        t = rounds({"calibration": calibration, "forward": forward}, warmup=1, repeats=5)
        cal, fwd = t["calibration"], t["forward"]
        print(f"calibration at ({w:g}, {r}): {len(images) / cal.median:8.0f} img/s vs plain forward "
              f"{len(images) / fwd.median:8.0f} img/s -> calibration / forward time {ratio_text(cal, fwd)}")

    t0 = time.perf_counter()
    table = build_query_table(model, val, calib, resolutions=[28, 24, 20, 16], width_step=args.width_step,
                              calib_images=args.calib_images, val_images=args.val_images, progress=False)
    total = time.perf_counter() - t0
    cal = table.meta["calibration"]
    print(f"query table: {len(table)} configurations in {total:.1f} s ({total / len(table):.2f} s each)")
    print(f"calibration: {cal['seconds']:.1f} s = {100 * cal['share_of_search_time']:.0f}% of search time, "
          f"{cal['images_per_s']:.0f} img/s")
    timing = table.meta["timing_s"]
    print(f"evaluation: {timing['eval_s']:.1f} s; MAC counting: {timing['profile_s']:.1f} s")


if __name__ == "__main__":
    main()
