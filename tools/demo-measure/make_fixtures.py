"""Reference values for the demo's measurement statistics (daemon/demo/measure.ts), from scipy.

Writes test/fixtures/demo-measure.json: Student-t quantiles t.ppf(0.975, df) and two-sided 95%
Clopper-Pearson intervals binomtest(k, n).proportion_ci(0.95, 'exact'). `npm test` reads the
committed file and needs no Python.

    python3 -m venv .cache/demo-measure-venv && .cache/demo-measure-venv/bin/pip install -r tools/demo-measure/requirements.txt
    .cache/demo-measure-venv/bin/python tools/demo-measure/make_fixtures.py
"""
import json
import pathlib

import scipy
from scipy import stats

out = {
    "scipy": scipy.__version__,
    "t_975": [{"df": df, "q": float(stats.t.ppf(0.975, df))} for df in [4, 10, 30, 63, 100, 255, 1023]],
    "clopper_pearson_95": [],
}
for k, n in [(0, 10), (5, 10), (10, 10), (3, 2288), (113, 2288), (70, 2288)]:
    ci = stats.binomtest(k, n).proportion_ci(0.95, "exact")
    out["clopper_pearson_95"].append({"k": k, "n": n, "lower": float(ci.low), "upper": float(ci.high)})

path = pathlib.Path(__file__).resolve().parents[2] / "test" / "fixtures" / "demo-measure.json"
path.write_text(json.dumps(out, indent=2) + "\n")
print(path)
