"""`python3 -m bnstudy` from a plain checkout (PYTHONPATH=.) on a GPU image: a system Python with torch, numpy,
pandas, scipy, matplotlib, seaborn and tqdm, no network, no project environment. The code path of `run` and
`plot` may import nothing else (Ray, hypothesis and pytest are extras a GPU image does not have)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPU_IMAGE = {"torch", "numpy", "pandas", "scipy", "matplotlib", "seaborn", "tqdm",
             "PIL"}  # Pillow: a dependency of matplotlib, so wherever matplotlib is

# Every `import` statement executed in a bnstudy module, cached modules included (builtins.__import__ sees
# them all; a finder on sys.meta_path would miss a package some library had already imported).
RECORDER = r"""
import builtins, json, sys
imported, real_import = set(), builtins.__import__

def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and str((globals or {}).get("__name__", "")).startswith("bnstudy"):
        imported.add(name.split(".")[0])
    return real_import(name, globals, locals, fromlist, level)

builtins.__import__ = recording_import
from bnstudy.cli import main
results = sys.argv[1]
codes = [main(["run", "noisy-bn", "--preset", "smoke", "--arms", "batchnorm", "noisy-batchnorm", "--no-progress",
               "--set", "data.dataset=synthetic", "--results-dir", results]),
         main(["plot", "noisy-bn", "--results-dir", results])]
print(json.dumps({"codes": codes, "imported": sorted(imported)}))
"""


def test_run_and_plot_import_only_what_a_gpu_image_ships(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", RECORDER, str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["codes"] == [0, 0]
    imported = set(report["imported"])
    assert {"torch", "pandas", "seaborn"} <= imported  # the recorder sees bnstudy's imports
    assert imported - GPU_IMAGE - set(sys.stdlib_module_names) - {"bnstudy"} == set()


def test_the_read_side_imports_no_torch():
    """reading, analysis, claims, plots and report draw and judge a results tree copied from a GPU machine on a
    laptop without torch: importing them loads none."""
    code = ("import sys\nimport bnstudy.reading, bnstudy.analysis, bnstudy.claims, bnstudy.plots, bnstudy.report, "
            "bnstudy.manifest\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", check=True)
    assert out.stdout.strip() == "[]"
