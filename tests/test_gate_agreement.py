"""The same reference and candidate logits give the same verdict through export's budget,
bench's gate and the bundle's release gate (each called as the command calls it, on the same
drift; bench and bundle read it back from a results.json document as they do in real use), for
binary, multi-class and multi-label models (multi-label: some labels too rare to evaluate, and
an artifact that reports only some of its labels)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgemed.bundle.gate import gate_limits, release_gate
from edgemed.contract import Contract
from edgemed.errors import DriftError
from edgemed.evaluation.drift import drift_from_logits
from edgemed.evaluation.limits import BENCH_DEFAULTS, limits_from
from edgemed.harness.bench import gate_violations
from edgemed.pipeline.budget import BudgetOptions, budget_for

BINARY = Contract(input_size=(28, 28), channels=1, class_names=("normal", "pneumonia"))
THREE = Contract(input_size=(28, 28), channels=1, class_names=("a", "b", "c"), task="multiclass")
FOUR = Contract(input_size=(28, 28), channels=1, class_names=("w", "x", "y", "z"),
                task="multilabel", threshold=(0.3, 0.5, 0.6, 0.5))  # fmt: skip
CONTRACTS = {"binary": BINARY, "multiclass": THREE, "multilabel": FOUR,
             "reported": FOUR.with_reported(("x", "z"))}  # fmt: skip
LIMIT = st.sampled_from([0.0, 0.001, 0.005, 0.02, 0.1])


def _logits(contract: Contract, n: int, seed: int, noise: float):
    rng = np.random.default_rng(seed)
    k = contract.num_outputs
    if contract.task == "multilabel":  # label z is rare: often too few positives to evaluate
        y = (rng.random((n, k)) < np.array([0.5, 0.3, 0.2, 0.04])).astype(int)
        ref = (2.0 * y - 1.0) * 1.5 + rng.normal(0, 1.0, (n, k))
        return ref, ref + rng.normal(0, noise, (n, k)), y
    y = rng.integers(0, 2 if k == 1 else k, n)
    signal = np.eye(max(k, 2))[y][:, :k] * 3.0 if k > 1 else (2.0 * y - 1.0)[:, None] * 1.5
    ref = signal + rng.normal(0, 1.0, (n, k))
    return ref, ref + rng.normal(0, noise, (n, k)), y


def _bundle_passes(doc_drift: dict, limits) -> bool:
    with tempfile.TemporaryDirectory() as d:
        art, rep = Path(d) / "art", Path(d) / "bench"
        art.mkdir(), rep.mkdir()
        (art / "manifest.json").write_text("{}")
        from edgemed.fileio import sha256_file

        row = {"label": "cand", "status": "ok", "drift": doc_drift,
               "artifact_manifest_sha256": sha256_file(art / "manifest.json")}  # fmt: skip
        (rep / "results.json").write_text(json.dumps({"format": "edgemed-bench/1", "rows": [row]}))
        try:
            release_gate(rep, art, limits, None)
        except DriftError:
            return False
        return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    task=st.sampled_from(sorted(CONTRACTS)),
    seed=st.integers(0, 10**6),
    noise=st.sampled_from([0.0, 0.01, 0.1, 0.5, 2.0]),
    auc=LIMIT, flips=LIMIT, sens=LIMIT, spec=LIMIT,
)  # fmt: skip
def test_export_bench_and_bundle_agree(task, seed, noise, auc, flips, sens, spec):
    contract = CONTRACTS[task]
    ref, cand, y = _logits(contract, 120, seed, noise)
    drift = drift_from_logits(contract, ref, cand, y, n_boot=0)
    given_ = {"auc_drop": auc, "flip_rate": flips, "sens_drop": sens, "spec_drop": spec}
    given = BudgetOptions({k: v for k, v in given_.items() if v is not None})
    export_ok = budget_for(given, "int8").holds(drift)
    doc = json.loads(json.dumps(drift.to_dict()))  # as bench writes it and bundle reads it
    bench_ok = not gate_violations(limits_from(given_, BENCH_DEFAULTS),
                                   [{"label": "cand", "status": "ok", "drift": doc}])  # fmt: skip
    # the bundle also requires a reference better than chance by default: hold it to 0 here
    bundle_ok = _bundle_passes(doc, gate_limits({**given_, "reference_auc": 0.0}))
    # ... which a label the split cannot evaluate fails even at 0: it cannot pass a floor
    assert export_ok == bench_ok and bundle_ok == (export_ok and not drift.not_evaluable)
    # the reference-above-chance floor: the same answer in bench and bundle, and a label the
    # split cannot evaluate never passes it
    floor = {"reference_auc": 0.5}
    bench_floor = not gate_violations(limits_from(floor, BENCH_DEFAULTS),
                                      [{"label": "cand", "status": "ok", "drift": doc}])  # fmt: skip
    assert bench_floor == _bundle_passes(doc, gate_limits({**floor, "auc_drop": 1.0,
        "flip_rate": 1.0, "sens_drop": 1.0, "spec_drop": 1.0}))  # fmt: skip
    if drift.not_evaluable:
        assert not bench_floor
