"""Search: time to build the full query table, and the share spent in BN calibration.

Builds the demo's query table (resnet20_cifar over widths [0.25, 1.0] step 0.05 x {28, 24, 20, 16} = 64
configurations) on real Fashion-MNIST: 2,000 calibration images per configuration, the whole 10,000-image
test set for evaluation. The weights are untrained (accuracy is irrelevant here; cost is the same). Also
compares calibration throughput with a plain forward pass at the same configuration, to show calibration
is dominated by the forward passes.

``--recipes`` instead compares, on a trained checkpoint of the demo's model (widths [0.5, 1.0]), the original
MutualNet recipe (every width x resolution: 9,216-image post-statistics + the full validation set) with ours
(identical networks once, 2,000 calibration images, successive halving from 1/8 of the validation set), and
ours without halving: cost ratio (wall time and MAC-weighted images) and whether the frontiers are identical.

    python benchmarks/bench_search.py [--val-images 10000] [--width-step 0.05] [--threads 2]
    python benchmarks/bench_search.py --recipes --checkpoint runs/demo/train/last.pt [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time
from unittest import mock

import torch
from _common import header, ratio_text, rounds

import mutualnet as mn
from mutualnet.calibrate import calibrate
from mutualnet.data import build_dataset, load_images, resize_batch
from mutualnet.search import build_query_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--val-images", type=int, default=10000)
    p.add_argument("--calib-images", type=int, default=2000)
    p.add_argument("--width-step", type=float, default=0.05)
    p.add_argument("--threads", type=int)
    p.add_argument("--recipes", action="store_true", help="original recipe vs ours (see above)")
    p.add_argument("--checkpoint", help="trained checkpoint for --recipes (default: an untrained model)")
    p.add_argument("--original-calib-images", type=int, default=9216)
    p.add_argument("--halving", type=float, default=0.125)
    p.add_argument("--run-original", action="store_true", help="--recipes: also run the original recipe (slow)")
    p.add_argument("--calib-tol", type=float, help="--recipes: ours stops calibrating once statistics converge")
    p.add_argument("--z", type=float, default=3.0, help="--recipes: ours' halving drops networks beaten by z sigmas")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.recipes:
        return recipes(args)
    model = mn.create_model("resnet20_cifar", in_chans=1, width_range=(0.25, 1.0)).eval()
    val = build_dataset("fashion_mnist", "val", input_size=28)
    calib = build_dataset("fashion_mnist", "train", input_size=28, augment=False)
    header("search: the full query table of the demo", torch.device("cpu"))

    images, _ = load_images(calib, args.calib_images)
    for w, r in [(1.0, 28), (0.25, 16)]:  # calibration and a plain forward of the same images, alternated

        def calibration(w=w, r=r) -> None:
            calibrate(model, images, w, r)

        def forward(w=w, r=r) -> None:
            with torch.no_grad(), mn.use_config(model, w, r):
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



def _work(table, model, exhaustive: bool, calib_used: dict) -> float:
    """MAC-weighted images a table cost: calibration and validation images of each network it computed
    (``calib_used``: the calibration images each network took, recorded as it ran)."""
    import mutualnet.search.build as build

    widths = table.meta["widths"]
    same = {w: w for w in widths} if exhaustive else build.distinct_widths(model, widths)
    n_val = max(r.get("val_images") or 0 for r in table.rows) or table.meta["validation"]["images_evaluated"] // len(
        [r for r in table.rows if same[r["width"]] == r["width"]])
    return sum((calib_used[(r["width"], r["resolution"])] + (r.get("val_images") or n_val)) * r["macs"]
               for r in table.rows if same[r["width"]] == r["width"])


def _floor(ref, hits: dict, calib: int, original: float) -> tuple[float, float]:
    """What any search with the reference's frontier must spend (MAC-weighted images / the original's): the frontier
    networks on every image, and each other network until a cheaper one beats it by 3 sigmas of the paired sign
    test checked after every image (an oracle: no real schedule looks that often), or all images if never."""
    rows = {(r["width"], r["resolution"]): r for r in ref.rows if (r["width"], r["resolution"]) in hits}
    front = {(r["width"], r["resolution"]) for r in ref.frontier()}
    only = seq = 0.0
    for c, hc in hits.items():
        n_all, need = len(hc), len(hc)
        if c not in front:
            for b, hb in hits.items():
                if b == c or rows[b]["macs"] > rows[c]["macs"]:
                    continue
                lead = ((hb & ~hc).int() - (hc & ~hb).int()).cumsum(0).float()
                apart = (hb ^ hc).int().cumsum(0).float()
                beaten = torch.nonzero(lead > 3 * apart.sqrt())
                need = min(need, int(beaten[0]) + 1 if len(beaten) else n_all)
        else:
            only += (calib + n_all) * rows[c]["macs"]
        seq += (calib + need) * rows[c]["macs"]
    return only / original, seq / original


def recipes(args: argparse.Namespace) -> None:
    import mutualnet.search.build as build
    from mutualnet.checkpoint import load_checkpoint, model_from_checkpoint

    model = (model_from_checkpoint(load_checkpoint(args.checkpoint)) if args.checkpoint else
             mn.create_model("resnet20_cifar", in_chans=1, width_range=(0.5, 1.0))).eval()
    weights = copy.deepcopy(model.state_dict())

    def fresh():  # the same weights, no calibrated statistics
        m = copy.deepcopy(model)
        m.load_state_dict(weights)
        return m
    val = build_dataset("fashion_mnist", "val", input_size=28)
    calib = build_dataset("fashion_mnist", "train", input_size=28, augment=False)
    header(f"search: original recipe vs ours, {args.checkpoint or 'untrained model'}", torch.device("cpu"))
    kw = {"resolutions": [28, 24, 20, 16], "width_step": args.width_step, "val_images": args.val_images,
          "progress": False}
    variants = {"ours (no halving)": None, "ours": args.halving}
    if args.run_original:
        variants = {"original": None} | variants
    runs, tables, calib_used, ref_hits = {}, {}, {}, {}
    build_hits = build.hits
    for name, halving in variants.items():
        patch = (mock.patch.object(build, "distinct_widths", lambda _, ws: {float(w): float(w) for w in ws})
                 if name == "original" else contextlib.nullcontext())
        used = calib_used.setdefault(name, {})

        def counted(*a, _used=used, **k):  # records the calibration images each network took
            res = calibrate(*a, **k)
            _used[(res.width, res.resolution)] = res.num_images
            return res
        extra = {"calib_tol": args.calib_tol, "z": args.z} if name == "ours" else {}
        seen = ref_hits if name == "ours (no halving)" else {}

        def recorded(m, batches, w, r, *a, _seen=seen, **k):  # the reference's per-image hits, for the floor
            out = build_hits(m, batches, w, r, *a, **k)
            _seen[(w, r)] = out[0]
            return out
        with patch, mock.patch.object(build, "calibrate", counted), mock.patch.object(build, "hits", recorded):
            t0 = time.perf_counter()
            tables[name] = build_query_table(
                fresh(), val, calib, halving=halving, **extra,
                calib_images=args.original_calib_images if name == "original" else args.calib_images, **kw)
            runs[name] = time.perf_counter() - t0
    ref = tables["ours (no halving)"]
    n_val = ref.meta["validation"]["images_evaluated"] // ref.meta["distinct_networks"]
    # the original recipe: every configuration calibrated on its images and validated on all; counted from the
    # MACs of each row (run it too with --run-original)
    original = sum((args.original_calib_images + n_val) * r["macs"] for r in ref.rows)
    print(f"{len(ref)} configurations, {ref.meta['distinct_networks']} distinct networks; validation set {n_val} "
          f"images; original recipe: {args.original_calib_images} calibration images + all validation images for "
          f"every configuration = {original / 1e12:.2f} T MAC-weighted images")
    base = "original" if "original" in runs else "ours (no halving)"
    for name, t in tables.items():
        work = _work(t, model, name == "original", calib_used[name]) / original
        print(f"{name:18s}: {runs[name]:8.1f} s wall ({runs[name] / runs[base]:.3f}x {base}); "
              f"{work:.3f}x the original recipe's MAC-weighted images; calibration "
              f"{sum(calib_used[name].values())} images over {len(calib_used[name])} networks, "
              f"{t.meta['validation']['images_evaluated']} validation images; frontier {len(t.frontier())} "
              "configurations")
    work = _work(tables["ours"], model, False, calib_used["ours"]) / original
    print(f"ours / original recipe: {work:.3f}x in MAC-weighted images (goal <= 0.15x: "
          f"{'met' if work <= 0.15 else 'not met'})")
    ours_f, ref_f = tables["ours"].frontier(), ref.frontier()
    same = [(r["width"], r["resolution"], r["top1"]) for r in ours_f] == \
        [(r["width"], r["resolution"], r["top1"]) for r in ref_f]
    same_cfg = [(r["width"], r["resolution"]) for r in ours_f] == [(r["width"], r["resolution"]) for r in ref_f]
    moved = max((abs(a["top1"] - b["top1"]) for a, b in zip(ours_f, ref_f)), default=0.0)
    print(f"frontier of ours with halving identical to ours without: {same} (configurations identical: "
          f"{same_cfg}; top-1 of its rows differs by up to {moved:.2f} points)")
    frontier_only, sequential = _floor(ref, ref_hits, args.calib_images, original)
    print(f"floor for an identical frontier: its networks on every image (exact top-1 needs them) "
          f"{frontier_only:.3f}x; plus the others stopped by an oracle sequential test (z=3, a look after every "
          f"image, the same calibration) {sequential:.3f}x")
    if "original" in tables:
        f_orig = {(r["width"], r["resolution"]) for r in tables["original"].frontier()}
        f_ours = {(r["width"], r["resolution"]) for r in tables["ours"].frontier()}
        moved = max(abs(a["top1"] - ref.find(a["width"], a["resolution"])["top1"]) for a in tables["original"].rows)
        print(f"frontier configurations shared with the original recipe: {len(f_orig & f_ours)} of {len(f_orig)} "
              f"(calibration on {args.calib_images} vs {args.original_calib_images} images moves top-1 by up to "
              f"{moved:.2f} points)")


if __name__ == "__main__":
    main()
