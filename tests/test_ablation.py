"""`mutualnet ablate`: each training option against the unchanged recipe, per seed, one table with a verdict."""

import json
import re
import shlex
from pathlib import Path

import pytest

from mutualnet import MutualNetError
from mutualnet.ablation import parse_option, run_ablation
from mutualnet.checkpoint import load_checkpoint
from mutualnet.cli import main
from mutualnet.search import QueryTable

# (width, resolution) -> MFLOPs of a made-up two-width, two-resolution network
COST = {(0.5, 16): 2.0, (0.5, 28): 4.0, (1.0, 16): 6.0, (1.0, 28): 10.0}


def _finished(out, option, seed, test):
    """A finished run of ``option`` for ``seed`` whose test top-1 per configuration is ``test`` (held-out: +1)."""
    folder = out / option / f"seed{seed}" / "mutualnet" / "search"
    folder.mkdir(parents=True)
    QueryTable([{"width": w, "resolution": r, "top1": test[(w, r)] + 1, "top5": 99, "macs": int(COST[(w, r)] * 1e6),
                 "params": 1, "test_top1": test[(w, r)], "test_top5": 99} for w, r in COST]).save(
        folder / "query_table.json")
    (folder / "calibrated.pt").write_bytes(b"")  # what compare takes as "this search finished"


def _acc(full, narrow, mid=80.0):
    return {(1.0, 28): full, (0.5, 16): narrow, (0.5, 28): mid, (1.0, 16): mid - 1}


def test_the_table_gives_gains_over_the_baseline_and_adopts_only_beyond_twice_the_seed_spread(tmp_path, capsys):
    _finished(tmp_path, "base", 0, _acc(90, 70))
    _finished(tmp_path, "base", 1, _acc(91, 71))
    _finished(tmp_path, "good", 0, _acc(92, 74, 84))  # everything higher, by far more than the seeds differ
    _finished(tmp_path, "good", 1, _acc(93, 75, 85))
    _finished(tmp_path, "noisy", 0, _acc(90, 70, 80))  # higher on average, but the seeds disagree by more
    _finished(tmp_path, "noisy", 1, _acc(95, 77, 86))
    _finished(tmp_path, "costly", 0, _acc(80, 80, 90))  # a better frontier paid for by the full network
    _finished(tmp_path, "costly", 1, _acc(80, 80, 90))
    _finished(tmp_path, "late", 0, _acc(99, 99, 99))  # one seed only: never adopted
    opts = {k: ["optim.clip_grad_value=1.0"] for k in ("good", "noisy", "costly", "late")}
    res = run_ablation(tmp_path, opts, epochs=1, seeds=[0, 1], report_only=True)
    rows = {r["option"]: r for r in res.rows}
    assert rows["base"]["full"]["mean"] == pytest.approx(90.5) and rows["base"]["seeds"] == [0, 1]
    good = rows["good"]
    assert good["full"]["gain"] == pytest.approx(2.0) and good["narrow"]["gain"] == pytest.approx(4.0)
    # the frontier: the test top-1 of the configuration picked (on held-out top-1) within each budget, averaged
    budgets = res.budgets
    assert budgets[0] == pytest.approx(2.0) and budgets[-1] == pytest.approx(10.0)

    def frontier(narrow, mid, full):  # a seed's test top-1 of the held-out pick, averaged over the budgets
        return sum(narrow if b < 4 else mid if b < 10 else full for b in budgets) / len(budgets)

    assert rows["base"]["frontier"]["values"] == pytest.approx([frontier(70, 80, 90), frontier(71, 80, 91)])
    assert good["frontier"]["gain"] == pytest.approx(
        (frontier(74, 84, 92) + frontier(75, 85, 93) - frontier(70, 80, 90) - frontier(71, 80, 91)) / 2)
    assert good["adopt"] and not rows["noisy"]["adopt"] and not rows["costly"]["adopt"]
    assert rows["costly"]["frontier"]["gain"] > 2 * rows["costly"]["frontier"]["spread"]  # refused for the full net
    assert rows["late"]["seeds"] == [0] and not rows["late"]["adopt"]
    md = (tmp_path / "ablation.md").read_text()
    assert "| good | optim.clip_grad_value=1.0 | 0, 1 | 92.50 ± 0.71 (+2.00) |" in md
    assert "Not finished for every seed (0, 1): late" in md
    assert json.loads((tmp_path / "ablation.json").read_text())["rows"][1]["option"] == "good"

    assert main(["ablate", "--out", str(tmp_path), "--epochs", "1", "--report-only",
                 "--option", "good=optim.clip_grad_value=1.0"]) == 0
    assert "| good |" in capsys.readouterr().out and "| noisy |" not in (tmp_path / "ablation.md").read_text()


def test_a_failing_option_is_recorded_and_the_other_runs_go_on(tmp_path, monkeypatch, capsys):
    """A run whose loss diverges (alpha, seed 1, in the lead's ablation) no longer stops the queue: it is recorded,
    tabulated as failed, the command exits 1 after every other run, and a rerun tries it again."""
    import mutualnet.ablation as ablation

    real, trained, fail = ablation.run_compare, [], {("alpha", 1)}

    def fake(out, *, seeds, report_only=False, **kw):  # training: "finishes" a run, or diverges
        if report_only:
            return real(out, seeds=seeds, report_only=True, **kw)
        key = (out.name, seeds[0])
        trained.append(key)
        if key in fail:
            raise MutualNetError("loss became nan at iteration 39 (epoch 1); training stopped")
        _finished(tmp_path, out.name, seeds[0], _acc(90 + seeds[0], 70))

    monkeypatch.setattr(ablation, "run_compare", fake)
    argv = ["ablate", "--out", str(tmp_path), "--epochs", "1", "--seeds", "0,1",
            "--option", "alpha=train.distill=alpha", "--option", "clip=optim.clip_grad_value=1.0"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert trained == [("base", 0), ("base", 1), ("alpha", 0), ("alpha", 1), ("clip", 0), ("clip", 1)]
    assert "option alpha, seed 1 failed: loss became nan at iteration 39" in captured.out
    assert captured.err.startswith("error: 1 run(s) failed") and captured.err.count("\n") == 1
    rows = {r["option"]: r for r in json.loads((tmp_path / "ablation.json").read_text())["rows"]}
    assert rows["alpha"]["seeds"] == [0] and "nan" in rows["alpha"]["failed"]["1"] and rows["clip"]["seeds"] == [0, 1]
    assert "Failed runs (rerun the same command to try them again): alpha seed 1: loss became nan" in (
        tmp_path / "ablation.md").read_text()
    fail.clear()  # the cause is fixed: the rerun trains the failed run and forgets its failure
    trained.clear()
    for option, seed in [("base", 0), ("base", 1), ("alpha", 0), ("clip", 0), ("clip", 1)]:
        folder = tmp_path / option / f"seed{seed}"  # finished runs: compare skips them (here: the fake, by hand)
        assert (folder / "mutualnet" / "search" / "calibrated.pt").exists()
    monkeypatch.setattr(ablation, "run_compare", lambda out, *, seeds, report_only=False, **kw: (
        real(out, seeds=seeds, report_only=True, **kw) if report_only else
        (trained.append((out.name, seeds[0])),
         None if (out / f"seed{seeds[0]}" / "mutualnet" / "search").exists()
         else _finished(tmp_path, out.name, seeds[0], _acc(91, 71)))))
    assert main(argv) == 0
    rows = {r["option"]: r for r in json.loads((tmp_path / "ablation.json").read_text())["rows"]}
    assert rows["alpha"]["seeds"] == [0, 1] and "failed" not in rows["alpha"]
    assert not (tmp_path / "alpha" / "seed1" / "mutualnet" / "failed.txt").exists()


def test_parse_option_and_bad_flags_are_one_line(tmp_path, capsys):
    assert parse_option("zi=model.zero_init_residual=true") == ("zi", ["model.zero_init_residual=true"])
    assert parse_option("two=a.b=1,c.d=2") == ("two", ["a.b=1", "c.d=2"])
    for bad in ("zi", "zi=", "=a.b=1", "base=a.b=1", "zi=flag", "1x=a.b=1"):
        with pytest.raises(MutualNetError):
            parse_option(bad)
    for argv in (["--option", "zi"], ["--option", "a=optim.lr=1", "--option", "a=optim.lr=2"], ["--seeds", "0,0"],
                 ["--option", "a=train.nonsense=1"]):
        capsys.readouterr()
        assert main(["ablate", "--out", str(tmp_path / "x"), "--no-progress", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    assert main(["ablate", "--out", str(tmp_path / "empty"), "--report-only"]) == 2
    assert "no baseline run has finished" in capsys.readouterr().err


def _documented_ablate_commands() -> list[list[str]]:
    """The ``mutualnet ablate`` commands of docs/results.md (fenced bash blocks)."""
    text = (Path(__file__).parents[1] / "docs" / "results.md").read_text()
    found = [shlex.split(line.split("#")[0]) for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
             for line in re.sub(r"\\\n\s*", " ", block).splitlines()
             if "mutualnet ablate" in line and not line.lstrip().startswith("#")]
    assert found, "docs/results.md shows no mutualnet ablate command"
    return [argv[argv.index("ablate"):] for argv in found]


@pytest.mark.slow
def test_the_documented_ablation_has_the_promised_size_and_runs_shrunk_end_to_end(tmp_path, capsys):
    """The documented commands cover >= 3 epochs x 2 seeds of the default options; each runs shrunk (one option,
    tiny data): every option trains per seed with its override, the table is computed from the runs, a rerun
    resumes."""
    from mutualnet.ablation import OPTIONS
    from mutualnet.cli import build_parser

    docs = _documented_ablate_commands()
    parsed = [build_parser().parse_args(argv) for argv in docs]
    runs = [a for a in parsed if not a.report_only]
    assert all(a.epochs >= 3 and a.options is None for a in runs) and len({s for a in runs for s in a.seeds}) >= 2
    assert any(a.report_only for a in parsed) and len(OPTIONS) >= 4
    out = tmp_path / "abl"
    argv = [*docs[1], "--out", str(out), "--epochs", "1", "--seeds", "1", "--train-images", "32",
            "--width-step", "0.5", "--calib-images", "16", "--threads", "1", "--no-progress",
            "--option", "clip=optim.clip_grad_value=0.5",
            *[a for kv in ("data.name=synthetic", "data.synthetic_length=64", "data.batch_size=16",
                           "model.num_classes=4", "run.tensorboard=false", "optim.lr=0.1", "run.val_every=0",
                           "data.holdout=16", "run.calib_batches=1") for a in ("--set", kv)]]
    assert main(argv) == 0
    assert main([*docs[-1], "--out", str(out), "--epochs", "1", "--option", "clip=optim.clip_grad_value=0.5"]) == 0
    for option, clip in (("base", None), ("clip", 0.5)):
        for seed in (1,):  # the table over several seeds is the test above; here: what actually trains
            cfg = load_checkpoint(out / option / f"seed{seed}" / "mutualnet" / "train" / "last.pt")["config"]
            assert cfg["optim"]["clip_grad_value"] == clip and cfg["run"]["seed"] == seed
            assert cfg["train"]["epochs"] == 1 and cfg["data"]["holdout"] == 16
    rows = {r["option"]: r for r in json.loads((out / "ablation.json").read_text())["rows"]}
    clip = QueryTable.load(out / "clip" / "seed1" / "mutualnet" / "search" / "query_table.json")
    assert rows["clip"]["full"]["values"][0] == pytest.approx(clip.find(1.0, 28)["test_top1"])
    assert rows["clip"]["seeds"] == [1] and rows["clip"]["adopt"] is False  # one seed is never enough
    assert rows["clip"]["full"]["gain"] == pytest.approx(rows["clip"]["full"]["mean"] - rows["base"]["full"]["mean"])
    before = (out / "clip" / "seed1" / "mutualnet" / "train" / "last.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0  # a rerun resumes: nothing trains again
    assert "already finished" in capsys.readouterr().out
    assert (out / "clip" / "seed1" / "mutualnet" / "train" / "last.pt").stat().st_mtime_ns == before
