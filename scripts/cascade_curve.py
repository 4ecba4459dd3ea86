"""Accuracy against *average* MFLOPs of cascades (docs/cascade.md) beside the static frontier, for docs/results.md.

Every configuration of the checkpoint's query-table frontier is run once on the held-out training images
(``data.holdout``) and once on the test set. For each budget, a cascade is fitted on the held-out images
(:func:`mutualnet.deploy.cascade.fit_cascade`) and the static configuration is picked on them too (the most
accurate on the held-out images within the budget); both are then *reported* on the test set. A cascade's test
numbers are replayed from the per-image test outputs of its configurations; the first budget's cascade is also run
for real (:func:`run_cascade`, inputs leaving the batch) and the two must agree. Prints a Markdown table and the
goal checks, writes the plot::

    python scripts/cascade_curve.py --checkpoint runs/demo/search/calibrated.pt --out docs/img/cascade_demo.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mutualnet.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from mutualnet.data.checkpoint import data_from_checkpoint  # noqa: E402
from mutualnet.data.datasets import random_subset  # noqa: E402
from mutualnet.deploy.adaptive import load_query_table  # noqa: E402
from mutualnet.deploy.cascade import TIES_SE, _replay, fit_cascade, model_runner, run_cascade, score_configs  # noqa: E402
from mutualnet.errors import MutualNetError  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="calibrated.pt of a network trained with data.holdout")
    p.add_argument("--budgets", default="3,4,5,6,7,8,10,12,15,20", help="average-MFLOPs budgets (the 40%% of the "
                   "full configuration's MFLOPs is added)")
    p.add_argument("--max-steps", type=int, default=3)
    p.add_argument("--grid", type=int, default=48)
    p.add_argument("--ties-se", type=float, default=TIES_SE, help="held-out top-1 differences below this many "
                   "standard errors are noise (fit_cascade; 0: the plain most accurate within the budget)")
    p.add_argument("--bootstrap", type=int, default=0, help="also refit on this many bootstrap resamples of the "
                   "held-out images at --bootstrap-budgets and the 40%% budget: how much goal 1 depends on the draw")
    p.add_argument("--bootstrap-budgets", default="12")
    p.add_argument("--heldout-images", type=int, help="held-out images (default: all)")
    p.add_argument("--val-images", type=int, help="test images (default: all)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="cascade_curve.png", help="plot file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    ckpt = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    front = load_query_table(ckpt).frontier()
    data = data_from_checkpoint(ckpt, model, workers=0)
    crop = max([*((ckpt.get("meta") or {}).get("resolutions") or []), *(r["resolution"] for r in front)])
    heldout = random_subset(data.build("holdout", crop), args.heldout_images, 0)
    test = random_subset(data.build("val", crop), args.val_images, 0)
    held = score_configs(model, DataLoader(heldout, batch_size=args.batch_size), front)
    tst = score_configs(model, DataLoader(test, batch_size=args.batch_size), front)
    full = max(range(len(front)), key=lambda k: (front[k]["width"], front[k]["resolution"]))
    full_mflops, full_test = front[full]["mflops"], 100.0 * float(tst.correct[:, full].float().mean())
    held_acc = 100.0 * held.correct.float().mean(0)
    test_acc = 100.0 * tst.correct.float().mean(0)
    budgets = sorted({float(b) for b in args.budgets.split(",")} | {round(0.4 * full_mflops, 2)})

    rows, curve = [], []
    for i, budget in enumerate(budgets):
        fits = [k for k in range(len(front)) if front[k]["mflops"] <= budget + 1e-9]
        if not fits:
            continue
        static = max(fits, key=lambda k: (float(held_acc[k]), -front[k]["mflops"]))
        try:
            cascade = fit_cascade(held, max_mflops=budget, max_steps=args.max_steps, grid=args.grid,
                                  ties_se=args.ties_se)
        except MutualNetError:
            continue
        chain = tuple(held.configs.index(s.config) for s in cascade.steps)
        stop, correct = _replay(cascade, tst, chain)
        rep = cascade.report(stop, correct)
        if i == 0 or not rows:  # the replay is what running the cascade does
            real_stop, real_hit = [], []
            run = model_runner(model)
            for x, y in DataLoader(test, batch_size=args.batch_size):
                out = run_cascade(cascade, x.float(), run)
                real_stop.append(out.stop)
                real_hit.append(out.logits.argmax(-1) == y)
            agree = float((torch.cat(real_stop) == stop).float().mean())
            print(f"replayed vs run cascade at {budget:g} MFLOPs: same stopping step for {100 * agree:.2f}% of test "
                  f"images, top-1 {rep['top1']:.2f}% vs {100 * float(torch.cat(real_hit).float().mean()):.2f}%")
        steps = " → ".join(f"{s.width:g}@{s.resolution}" for s in cascade.steps)
        shares = " / ".join(f"{100 * s:.0f}" for s in rep["stop_share"])
        rows.append(f"| {budget:g} | {front[static]['width']:g}@{front[static]['resolution']} | "
                    f"{float(test_acc[static]):.2f} / {front[static]['mflops']:.2f} | {steps} | "
                    f"{' / '.join(f'{t:.3f}' for t in cascade.thresholds[:-1]) or '—'} | {shares} | "
                    f"**{rep['top1']:.2f}** / {rep['mflops']:.2f} | {cascade.fit['top1']:.2f} / "
                    f"{cascade.fit['mflops']:.2f} | {rep['top1'] - float(test_acc[static]):+.2f} |")
        curve.append((budget, rep["mflops"], rep["top1"], float(test_acc[static]), front[static]["mflops"]))
        if args.ties_se:  # the plain fit (the most accurate on the held-out images within the budget), side by side
            plain = fit_cascade(held, max_mflops=budget, max_steps=args.max_steps, grid=args.grid, ties_se=0.0)
            r0 = plain.report(*_replay(plain, tst, tuple(held.configs.index(s.config) for s in plain.steps)))
            rows[-1] += f" {r0['top1']:.2f} / {r0['mflops']:.2f} |"

    print(f"full configuration {front[full]['width']:g}@{front[full]['resolution']}: test top-1 {full_test:.2f}%, "
          f"{full_mflops:.2f} MFLOPs; {len(front)} frontier configurations; {len(held.confidence)} held-out, "
          f"{len(tst.confidence)} test images")
    print()
    print("| budget (avg MFLOPs) | static pick | static test top-1 / MFLOPs | cascade steps | thresholds | "
          "% stopping per step (test) | cascade test top-1 / avg MFLOPs | held-out (fitted) top-1 / avg MFLOPs | "
          "cascade − static (pt) |" + (" plain fit (ties_se 0): test top-1 / avg MFLOPs |" if args.ties_se else ""))
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if args.ties_se else ""))
    print("\n".join(rows))
    print()
    reach = [c for c in curve if c[2] >= full_test - 0.1]
    cheapest = min(reach, key=lambda c: c[1]) if reach else None
    print("goal 1 (full top-1 within 0.1 pt at <= 40% of its MFLOPs): " + (
        f"{cheapest[2]:.2f}% at {cheapest[1]:.2f} MFLOPs = {100 * cheapest[1] / full_mflops:.0f}% of full -> "
        f"{'met' if cheapest[1] <= 0.4 * full_mflops else 'not met'}" if cheapest else "no fitted cascade reaches it"))
    gains = [(c[2] - _static_test(c[1], front, held_acc, test_acc), c) for c in curve if 5 <= c[1] <= 15]
    best = max(gains, key=lambda g: g[0]) if gains else None
    print("goal 2 (>= +1 pt over the static frontier at an average budget in 5-15 MFLOPs): " + (
        f"best +{best[0]:.2f} pt at {best[1][1]:.2f} MFLOPs -> {'met' if best[0] >= 1.0 else 'not met'}"
        if best else "no cascade in 5-15 MFLOPs"))
    if args.bootstrap:
        _bootstrap(held, tst, args, full_test, full_mflops)
    _plot(curve, front, test_acc, args.out)
    print(f"plot: {args.out}")


def _bootstrap(held, tst, args: argparse.Namespace, full_test: float, full_mflops: float) -> None:
    """Refit on resamples (with replacement) of the held-out images, report each on the test set: the spread of
    test top-1 - the full configuration's and of average MFLOPs, and how often goal 1 holds."""
    from mutualnet.deploy.cascade import Scores

    n = len(held.confidence)
    budgets = sorted({float(b) for b in args.bootstrap_budgets.split(",")} | {round(0.4 * full_mflops, 2)})
    for ties in sorted({0.0, args.ties_se}):
        for budget in budgets:
            gaps, costs = [], []
            for b in range(args.bootstrap):
                idx = torch.randint(0, n, (n,), generator=torch.Generator().manual_seed(b))
                c = fit_cascade(Scores(held.configs, held.mflops, held.confidence[idx], held.correct[idx]),
                                max_mflops=budget, max_steps=args.max_steps, grid=args.grid, ties_se=ties)
                r = c.report(*_replay(c, tst, tuple(held.configs.index(s.config) for s in c.steps)))
                gaps.append(r["top1"] - full_test)
                costs.append(r["mflops"])
            met = sum(g >= -0.1 and m <= 0.4 * full_mflops for g, m in zip(gaps, costs))
            print(f"bootstrap ties_se {ties:g}, budget {budget:g}: test top-1 - full median {_median(gaps):+.2f} "
                  f"[{min(gaps):+.2f}, {max(gaps):+.2f}], avg MFLOPs median {_median(costs):.2f} [{min(costs):.2f}, "
                  f"{max(costs):.2f}]; goal 1 holds in {met}/{args.bootstrap}")


def _median(xs: list[float]) -> float:
    return float(torch.tensor(xs).median())


def _static_test(mflops: float, front: list[dict], held_acc: torch.Tensor, test_acc: torch.Tensor) -> float:
    """Test top-1 of the static configuration picked on the held-out images within ``mflops``."""
    fits = [k for k in range(len(front)) if front[k]["mflops"] <= mflops + 1e-9]
    return float(test_acc[max(fits, key=lambda k: (float(held_acc[k]), -front[k]["mflops"]))]) if fits else 0.0


def _plot(curve: list[tuple], front: list[dict], test_acc: torch.Tensor, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = [r["mflops"] for r in front]
    ax.plot(xs, test_acc.tolist(), "o-", color="tab:gray", label="static configurations (frontier)")
    ax.plot([c[1] for c in curve], [c[2] for c in curve], "s-", color="tab:red",
            label="cascade (fitted on held-out images)")
    ax.set_xlabel("average MFLOPs per image")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("Anytime inference: cascade vs static frontier")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
