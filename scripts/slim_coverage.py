"""Coverage of ``mutualnet.slim`` over torchvision's classification zoo, written into docs/slimming.md.

For every name of ``torchvision.models.list_models(module=torchvision.models)``, ``tv/<name>`` is built and
checked: converted or refused (the one-line reason), the top width equal to torchvision's own model with the same
weights (loaded strictly, so the state-dict keys are the same) exactly, narrow widths valid (finite outputs,
``materialize`` equal to the slimmable model, the profiler's MACs equal to the dense network's), MACs
non-decreasing in width, MACs at width 0.5 and 1.0 and, where torchvision has a width multiplier, its MACs at 0.5;
TorchScript and ONNX export of the width-0.5 sub-network (checked against the model, ONNX with onnxruntime).

Checks run at small inputs (64 px, or the smallest a network accepts) to keep this CPU-friendly; MACs are
counted at the model's ImageNet input size on the meta device (shapes only, no arithmetic). Networks over 150M
parameters are converted and profiled on the meta device only; export is checked up to 40M parameters
(``--large`` lifts both caps, and timm's 30M one, for the ``--models`` named). Results are kept in a JSON file, so
an interrupted run resumes::

    nice -n 10 python scripts/slim_coverage.py                 # all models, then rewrite the doc's table
    python scripts/slim_coverage.py --models resnet18,alexnet  # some models (the doc keeps the others' rows)
    nice -n 10 python scripts/slim_coverage.py --zoo timm      # one model (or a few) per timm CNN family
    python scripts/slim_coverage.py --models vgg11 --large --redo  # every check on a large model too

For timm (``--zoo timm``), ``TIMM_FAMILIES`` lists timm's convolutional families (its model modules without
attention blocks) with their smallest model first, and a few variants the issue named. A family counts as
converted when its first model converts. The top width is compared with timm's own model holding the same
weights (relative difference, <= 1e-5 passes), narrow widths and ``materialize`` as above, and ONNX export of the
width-0.5 sub-network within 1e-5 of the outputs' scale.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import mutualnet as mn  # noqa: E402
from mutualnet.deploy.export import export_subnet, save_exported  # noqa: E402
from mutualnet.models.tv import torchvision_model, tv_model_names  # noqa: E402
from mutualnet.profiling import count_macs  # noqa: E402

BEGIN, END = "<!-- coverage:begin -->", "<!-- coverage:end -->"
TIMM_BEGIN, TIMM_END = "<!-- timm-coverage:begin -->", "<!-- timm-coverage:end -->"
MAX_REAL_PARAMS = 150_000_000  # above: conversion and MACs on the meta device only
MAX_EXPORT_PARAMS = 40_000_000  # above: no export check (ONNX files of hundreds of MB on a shared 2-core box)
# the families the issue names first, then the rest of the zoo
PRIORITY = ("resnet", "resnext", "wide_resnet", "mobilenet", "mnasnet", "efficientnet", "regnet", "vgg", "alexnet",
            "squeezenet", "densenet", "googlenet", "inception", "shufflenet", "convnext")
WIDTHS = [0.25 + 0.0625 * i for i in range(13)]  # 0.25 ... 1.0
# torchvision's own width multipliers at 0.5, for the MACs comparison
WIDTH_MULT = {
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=10),
    "mobilenet_v3_large": lambda: torchvision.models.mobilenet_v3_large(width_mult=0.5, num_classes=10),
    "mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(width_mult=0.5, num_classes=10),
    "mnasnet1_0": lambda: torchvision.models.MNASNet(0.5, num_classes=10),
}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def check(name: str, large: bool = False) -> dict:
    """Every guarantee for ``tv/<name>`` (see the module docstring); ``large`` lifts the parameter caps."""
    row: dict = {"model": name}
    info = mn.model_info(f"tv/{name}")
    size = info.input_size
    t0 = time.perf_counter()
    try:
        try:
            with torch.device("meta"):  # conversion and MACs need shapes only
                meta = mn.create_model(f"tv/{name}", num_classes=10, width_range=(0.25, 1.0))
        except RuntimeError:  # a builder that computes its widths with tensors (RegNet) cannot run on meta
            meta = mn.create_model(f"tv/{name}", num_classes=10, width_range=(0.25, 1.0)).to("meta")
    except mn.MutualNetError as e:
        return row | {"status": "refused", "reason": str(e).split(": ", 1)[-1]}
    row["status"] = "converted"
    row["convert_s"] = round(time.perf_counter() - t0, 2)
    row["params_m"] = round(sum(p.numel() for p in meta.parameters()) / 1e6, 2)
    row["fixed_groups"] = len(meta.slim_plan.notes)
    macs = [mn.profile(meta, w, size).macs for w in WIDTHS]
    row["macs_monotone"] = all(a <= b for a, b in zip(macs, macs[1:]))
    row["mmacs_1.0"], row["mmacs_0.5"] = macs[-1] / 1e6, mn.profile(meta, 0.5, size).macs / 1e6
    row["mmacs_0.25"] = macs[0] / 1e6
    if name in WIDTH_MULT:
        with torch.device("meta"):
            ref = WIDTH_MULT[name]()
        row["tv_width_mult_0.5_mmacs"] = count_macs(ref, torch.zeros(1, 3, size, size, device="meta")) / 1e6
    if not large and sum(p.numel() for p in meta.parameters()) > MAX_REAL_PARAMS:
        row["checks"] = "not run (over 150M parameters)"
        return row
    del meta
    torch.manual_seed(0)
    model = mn.create_model(f"tv/{name}", num_classes=10, width_range=(0.25, 1.0)).eval()
    reference = torchvision_model(name, num_classes=10).eval()
    reference.load_state_dict(model.state_dict(), strict=True)  # same keys, same shapes
    res = max(64, 8 * math.ceil(model.min_resolution / 8))
    row["check_resolution"] = res
    x = torch.randn(2, 3, res, res)
    with torch.no_grad():
        y, y_ref = model(x), reference(x)
    # export compares logits with an absolute tolerance; untrained networks (Inception's wide initialisation)
    # can have logits in the hundreds, where folding BN into convolutions moves float rounding beyond 1e-4
    atol = 1e-4 * max(1.0, float(y.abs().max()))
    row["top_equal"] = bool(torch.equal(y, y_ref))
    row["top_max_abs_diff"] = float((y - y_ref).abs().max())
    del reference
    narrow = True
    mn.allow_uncalibrated(model)  # a fresh model has no calibrated statistics; outputs are compared, not accuracy
    for w in (0.25, 0.5):
        model.set_width(w)
        with torch.no_grad():
            out = model(x)
            dense = mn.materialize(model).eval()
            same = torch.allclose(dense(x), out, rtol=1e-4, atol=1e-4)
        narrow &= bool(torch.isfinite(out).all()) and same
        narrow &= mn.profile(model, w, res).macs == count_macs(dense, x[:1])
        del dense
    row["narrow_ok"] = narrow
    model.set_width(1.0)
    if not large and row["params_m"] > MAX_EXPORT_PARAMS / 1e6:
        row["export_torchscript"] = row["export_onnx"] = "not run (over 40M parameters)"
        row["check_s"] = round(time.perf_counter() - t0, 1)
        return row
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, suffix in (("torchscript", "ts"), ("onnx", "onnx")):
            try:
                net, _ = export_subnet(model, 0.5, res, allow_uncalibrated=True, atol=atol)
                save_exported(net, Path(tmp) / f"m.{suffix}", fmt, atol=atol)
                row[f"export_{fmt}"] = "ok"
            except Exception as e:  # noqa: BLE001 - recorded in the table
                row[f"export_{fmt}"] = _first_line(e)
    row["check_s"] = round(time.perf_counter() - t0, 1)
    return row


# timm's convolutional families (timm.models.<module>), smallest model first, then variants worth a row
TIMM_FAMILIES = {
    "resnet": ["resnet18", "resnet50d", "seresnext26d_32x4d", "ecaresnet26t"],
    "resnetv2": ["resnetv2_18"], "regnet": ["regnetx_002", "regnety_002"],
    "efficientnet": ["efficientnet_b0", "tf_efficientnet_b0", "mobilenetv2_100", "mnasnet_100", "mixnet_s"],
    "mobilenetv3": ["mobilenetv3_small_100", "lcnet_050"], "ghostnet": ["ghostnet_050"],
    "hardcorenas": ["hardcorenas_a"], "rexnet": ["rexnet_100"], "densenet": ["densenet121"], "dla": ["dla34"],
    "dpn": ["dpn48b"], "vgg": ["vgg11"], "inception_v3": ["inception_v3"], "inception_v4": ["inception_v4"],
    "inception_resnet_v2": ["inception_resnet_v2"], "xception": ["legacy_xception"],
    "xception_aligned": ["xception41"], "res2net": ["res2net50_14w_8s"], "resnest": ["resnest14d"],
    "sknet": ["skresnet18"], "selecsls": ["selecsls42b"], "cspnet": ["cspresnet50", "cspdarknet53"],
    "byobnet": ["gernet_s", "repvgg_a0"], "nfnet": ["nf_resnet26"], "hrnet": ["hrnet_w18_small"],
    "vovnet": ["ese_vovnet19b_dw"], "tresnet": ["tresnet_m"], "hgnet": ["hgnetv2_b0"],
    "repghost": ["repghostnet_050"], "repvit": ["repvit_m0_9"], "senet": ["legacy_seresnet18"],
    "convnext": ["convnext_atto"], "starnet": ["starnet_s050"], "fasternet": ["fasternet_t0"],
    "convmixer": ["convmixer_768_32"], "cspnext": ["cspnext_tiny"], "lcnetv2": ["lcnetv2_small"],
    "mambaout": ["mambaout_femto"], "rdnet": ["rdnet_tiny"], "inception_next": ["inception_next_atto"],
    "nasnet": ["nasnetalarge"], "pnasnet": ["pnasnet5large"],
}
TIMM_MAX_REAL_PARAMS = 30_000_000  # above: conversion and MACs on the meta device only (the 2-core machine)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-12)


def check_timm(name: str, large: bool = False) -> dict:
    """The guarantees for ``timm/<name>`` against timm's own model (see the module docstring); ``large`` lifts the
    parameter cap."""
    import timm

    row: dict = {"model": name}
    try:
        with torch.device("meta"):
            meta = mn.create_model(f"timm/{name}", num_classes=10, width_range=(0.25, 1.0))
    except mn.MutualNetError as e:
        return row | {"status": "refused", "reason": str(e).split(": ", 1)[-1]}
    size = mn.model_info(f"timm/{name}").input_size
    row |= {"status": "converted", "fixed_groups": len(meta.slim_plan.notes),
            "params_m": round(sum(p.numel() for p in meta.parameters()) / 1e6, 2)}
    macs = [mn.profile(meta, w, size).macs for w in WIDTHS]
    row["macs_monotone"] = all(a <= b for a, b in zip(macs, macs[1:]))
    row["mmacs_0.25"], row["mmacs_0.5"], row["mmacs_1.0"] = macs[0] / 1e6, mn.profile(meta, 0.5, size).macs / 1e6, \
        macs[-1] / 1e6
    if not large and row["params_m"] * 1e6 > TIMM_MAX_REAL_PARAMS:
        row["checks"] = "not run (over 30M parameters)"
        return row
    del meta
    torch.manual_seed(0)
    model = mn.create_model(f"timm/{name}", num_classes=10, width_range=(0.25, 1.0)).eval()
    reference = timm.create_model(name, pretrained=False, num_classes=10).eval()
    reference.load_state_dict(model.state_dict(), strict=True)  # same keys, same shapes
    res = max(64, 32 * math.ceil(model.min_resolution / 32))
    row["check_resolution"] = res
    x = torch.randn(2, 3, res, res)
    with torch.no_grad():
        y, y_ref = model(x), reference(x)
    row["top_rel_diff"] = _rel(y, y_ref)
    row["top_equal"] = row["top_rel_diff"] <= 1e-5
    del reference
    narrow = True
    mn.allow_uncalibrated(model)
    for w in (0.25, 0.5):
        model.set_width(w)
        with torch.no_grad():
            out = model(x)
            dense = mn.materialize(model).eval()
            narrow &= bool(torch.isfinite(out).all()) and _rel(dense(x), out) <= 1e-5
        narrow &= mn.profile(model, w, res).macs == count_macs(dense, x[:1])
        del dense
    row["narrow_ok"] = narrow
    model.set_width(1.0)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            net, _ = export_subnet(model, 0.5, res, allow_uncalibrated=True, atol=1e-5)
            save_exported(net, Path(tmp) / "m.onnx", "onnx", atol=1e-5)
            row["export_onnx"] = "ok"
        except Exception as e:  # noqa: BLE001 - recorded in the table
            row["export_onnx"] = _first_line(e)
    return row


def _yes(v: object) -> str:
    return {True: "yes", False: "**no**", None: "-"}.get(v, str(v))


def _mmacs(v: float | None) -> str:
    return "-" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.1f}")


def table(rows: list[dict], zoo: str = "tv") -> str:
    """The markdown table of either zoo: one renderer, the columns each zoo's checks fill.

    ``zoo="tv"``: rows in order, TorchScript and ONNX export, torchvision's own width multiplier. ``zoo="timm"``:
    ``rows`` is ``{model: row}``, rendered family by family (``TIMM_FAMILIES``), with the relative top-width
    difference and ONNX only.
    """
    timm = zoo == "timm"
    if timm:
        head = ["family", "model", "result", "top width = timm (rel. diff)", "narrow widths valid, materialize exact",
                "MMACs 0.25 / 0.5 / 1.0", "ONNX (w 0.5)", "fixed groups"]
        ordered = [(fam, rows[n]) for fam, names in TIMM_FAMILIES.items() for n in names if n in rows]
    else:
        head = ["model", "result", "top width = torchvision", "narrow widths valid", "MMACs 0.25 / 0.5 / 1.0",
                "torchvision width_mult=0.5", "export TorchScript / ONNX (w 0.5)", "fixed groups"]
        ordered = [(None, r) for r in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for fam, r in ordered:
        lead = [fam, r["model"]] if timm else [r["model"]]
        if r["status"] == "refused":
            cells = lead + [f"refused: {r['reason'].replace('|', '/')}"]
            lines.append("| " + " | ".join(cells) + " |" + " |" * (len(head) - len(cells)))
            continue
        checks = r.get("checks")
        narrow = _yes(r.get("narrow_ok")) if not checks else "-"
        macs = f"{_mmacs(r['mmacs_0.25'])} / {_mmacs(r['mmacs_0.5'])} / {_mmacs(r['mmacs_1.0'])}"
        if timm:
            top = checks or f"{_yes(r.get('top_equal'))} ({r.get('top_rel_diff', 0):.1e})"
            cells = lead + ["converted", top, narrow, macs, r.get("export_onnx", "-"), str(r["fixed_groups"])]
        else:
            exp = " / ".join(r.get(f"export_{f}") or "-" for f in ("torchscript", "onnx"))
            if exp.startswith("not run"):
                exp = r["export_onnx"]
            ref = r.get("tv_width_mult_0.5_mmacs")
            ref_txt = "-" if ref is None else f"{_mmacs(ref)} ({r['mmacs_0.5'] / ref:.3f}x)"
            top = _yes(r.get("top_equal")) if not checks else checks
            mono = "" if r.get("macs_monotone") else " **(not monotone)**"
            cells = lead + ["converted", top, narrow, macs + mono, ref_txt, exp if not checks else "-",
                            str(r["fixed_groups"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", help="comma-separated torchvision names (default: all)")
    p.add_argument("--json", default=str(ROOT / "runs" / "slim_coverage.json"), help="results kept here")
    p.add_argument("--doc", default=str(ROOT / "docs" / "slimming.md"), help="markdown file with the table markers")
    p.add_argument("--redo", action="store_true", help="check again models already in the JSON file")
    p.add_argument("--zoo", choices=("tv", "timm"), default="tv", help="torchvision's zoo or timm's CNN families")
    p.add_argument("--large", action="store_true",
                   help="run every check on the --models named, whatever their size (the parameter caps skip them)")
    args = p.parse_args(argv)
    if args.large and not args.models:
        p.error("--large needs --models (the caps keep a whole-zoo run within hours on 2 cores)")
    torch.set_num_threads(1)
    if args.zoo == "timm":
        return main_timm(args)
    names = args.models.split(",") if args.models else sorted(
        tv_model_names(), key=lambda n: next((i for i, f in enumerate(PRIORITY) if n.startswith(f)), len(PRIORITY)))
    store = Path(args.json)
    store.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(store.read_text()) if store.exists() else {}
    for name in names:
        if name in results and not args.redo:
            continue
        try:
            results[name] = check(name, args.large)
        except Exception as e:  # noqa: BLE001 - a crash is a finding, recorded in the table
            results[name] = {"model": name, "status": "refused", "reason": f"check crashed: {_first_line(e)}"}
        r = results[name]
        print(f"{name:24s} {r['status']:9s} {r.get('reason', '')[:90]} top={r.get('top_equal')} "
              f"narrow={r.get('narrow_ok')} ts={r.get('export_torchscript')} onnx={r.get('export_onnx')}", flush=True)
        tmp = store.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(store)
    doc = Path(args.doc)
    text = doc.read_text()
    rows = [results[n] for n in tv_model_names() if n in results]
    conv = sum(r["status"] == "converted" for r in rows)
    summary = f"{conv} of {len(rows)} checked models converted, {len(rows) - conv} refused."
    new = f"{BEGIN}\n{summary}\n\n{table(rows)}\n{END}"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    doc.write_text(head + new + tail)
    print(summary)
    return 0


def main_timm(args: argparse.Namespace) -> int:
    names = args.models.split(",") if args.models else list(dict.fromkeys(n for v in TIMM_FAMILIES.values()
                                                                            for n in v))
    store = Path(args.json if args.json != str(ROOT / "runs" / "slim_coverage.json")
                 else ROOT / "runs" / "slim_coverage_timm.json")
    store.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(store.read_text()) if store.exists() else {}
    for name in names:
        if name in results and not args.redo:
            continue
        try:
            results[name] = check_timm(name, args.large)
        except Exception as e:  # noqa: BLE001 - a crash is a finding, recorded in the table
            results[name] = {"model": name, "status": "refused", "reason": f"check crashed: {_first_line(e)}"}
        r = results[name]
        print(f"{name:24s} {r['status']:9s} {r.get('reason', '')[:100]} top={r.get('top_rel_diff')} "
              f"narrow={r.get('narrow_ok')} onnx={r.get('export_onnx')}", flush=True)
        tmp = store.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(store)
    firsts = [v[0] for v in TIMM_FAMILIES.values() if v[0] in results]
    conv = sum(results[n]["status"] == "converted" for n in firsts)
    rows = [n for v in TIMM_FAMILIES.values() for n in v if n in results]
    conv_rows = sum(results[n]["status"] == "converted" for n in set(rows))
    summary = (f"{conv} of {len(firsts)} timm CNN families converted (their first model); {conv_rows} of "
               f"{len(set(rows))} models in the table.")
    doc = Path(args.doc)
    text = doc.read_text()
    head, _, rest = text.partition(TIMM_BEGIN)
    _, _, tail = rest.partition(TIMM_END)
    doc.write_text(head + f"{TIMM_BEGIN}\n{summary}\n\n{table(results, 'timm')}\n{TIMM_END}" + tail)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
