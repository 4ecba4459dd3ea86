"""Every benchmark script runs end to end (tiny sizes) and prints its side-by-side ratio."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

CASES = {
    "bench_contention.py": (["--steps", "2", "--rounds", "1", "--competitors", "0,1", "--setups", "one_thread",
                             "--set", "data.batch_size=8", "--set", "data.train_subset=64", "--set", "data.workers=0"],
                            r"1 competitor\(s\)  one_thread .*x \["),
    "bench_train_step.py": (["--model", "resnet20_cifar", "--batch", "4", "--repeats", "1"],
                            r"ratio slimmable / dense"),
    "bench_depth.py": (["--batch", "4", "--repeats", "1"], r"3-D / 2-D step .*x"),
    "bench_loader.py": (["--images", "600", "--batches", "2", "--repeats", "1"],
                        r"ratio seeded loader / augmentation"),
    "bench_memory.py": (["--model", "resnet20_cifar", "--batch", "8"], r"ratio mutual / full"),
    "bench_data_path.py": (["--model", "resnet20_cifar", "--resolutions", "32,28,24,20", "--images", "16",
                            "--batch", "4", "--workers", "0"], r"speed-up device / loader"),
    "bench_inference.py": (["--resolution", "64", "--repeats", "2", "--threads", "1"], r"ratio ours / torchvision"),
    "bench_runtime.py": (["--configs", "mobilenet_v2_cifar:0.5:32", "--repeats", "2", "--ort-options"],
                         r"ort:extended .*x eager"),
    "bench_ddp.py": (["--batch", "2", "--repeats", "1"], r"gradients equal: max \|ours - DDP\| = 0\.00e\+00"),
    "bench_search.py": (["--val-images", "100", "--calib-images", "50", "--width-step", "0.75", "--threads", "1"],
                        r"calibration: .*% of search time"),
    "bench_search.py --recipes": (["--recipes", "--val-images", "64", "--calib-images", "16",
                                   "--original-calib-images", "32", "--width-step", "0.5", "--threads", "1",
                                   "--run-original", "--calib-tol", "0.5"],
                                  r"ours / original recipe: [0-9.]+x in MAC-weighted images"),
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_runs_and_reports_a_ratio(script):
    needs_data = script.startswith(("bench_search.py", "bench_contention.py"))
    if needs_data and not Path("/usr/share/datasets/fashion-mnist").exists():
        pytest.skip("needs Debian's dataset-fashion-mnist (scripts/setup.sh installs it)")
    args, pattern = CASES[script]
    out = subprocess.run([sys.executable, str(BENCH / script.split()[0]), *args], cwd=BENCH, capture_output=True,
                         text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                              **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}})
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(pattern, out.stdout), out.stdout
    ratios = [float(x) for x in re.findall(r"([0-9.]+)x", out.stdout)]
    assert ratios and all(r > 0 for r in ratios)


def test_gpu_script_parses_and_its_nccl_step_refuses_cpu_plainly():
    """benchmarks/gpu.sh cannot run here (no GPU); its syntax and the NCCL step's guard can."""
    assert subprocess.run(["bash", "-n", str(BENCH / "gpu.sh")], capture_output=True).returncode == 0
    assert "bench_ddp.py --backend nccl --device cuda" in (BENCH / "gpu.sh").read_text()
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "",
           **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}}
    out = subprocess.run([sys.executable, str(BENCH / "bench_ddp.py"), "--backend", "nccl", "--device", "cuda"],
                         cwd=BENCH, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 2 and "needs one GPU per process: 2 processes, 0 GPU(s)" in out.stderr, out.stderr
