"""Shared backend test template (NNCF-style): each runtime's test class subclasses it.

    class TestOpenVINO(BackendTemplate):
        backend = "openvino"
        precisions = ("fp32", "fp16", "int8")

Each test exports the real chest X-ray model trained in the session fixture, runs the artifact
with its runtime on real test images, and checks drift against the torch FP32 reference. A
runtime that builds its deployable file on the device (`Registration.builds_on_device`, TensorRT)
overrides `runnable_artifact` to build it there; without that device those tests skip, saying why.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CXR, assert_user_error, run_cli, tree_snapshot

# Drift budgets by precision: (max |delta p|, max flip rate, max AUC drop).
BUDGETS = {"fp32": (1e-4, 0.0, 1e-6), "fp16": (5e-3, 0.01, 0.005), "int8": (0.2, 0.01, 0.005)}
CXR_CONTRACT = {"input_size": [28, 28], "channels": 1, "class_names": ["normal", "pneumonia"]}


class BackendTemplate:
    backend: str = ""
    precisions: tuple[str, ...] = ("fp32",)
    export_options: dict = {}

    @pytest.fixture(scope="class")
    def artifacts(self, cxr_model, tmp_path_factory) -> dict:
        return {}

    def _export(self, cxr_model, artifacts, tmp_path_factory, precision) -> Path:
        if precision not in artifacts:
            from edgemed.pipeline.export import ExportRequest, run_export

            out = tmp_path_factory.mktemp(f"{self.backend}-{precision}") / "artifact"
            run_export(
                ExportRequest(
                    model=str(cxr_model),
                    target=self.backend,
                    out=out,
                    precision=precision,
                    calib=str(CXR) if self._calibrates(precision) else None,
                    options=dict(self.export_options),
                )
            )
            artifacts[precision] = out
        return artifacts[precision]

    def _calibrates(self, precision: str) -> bool:
        from edgemed.backends import get_backend

        return (
            precision == "int8"
            or precision == "fp16"
            and get_backend(self.backend).fp16_calibration
        )

    def _require_device(self) -> None:
        """A CPU runtime must be installed here; a device runtime's tests skip without it."""
        from edgemed.backends import get_backend
        from edgemed.runtimes import registration

        missing = get_backend(self.backend).available()
        if missing and "cpu" not in registration(self.backend).devices:
            pytest.skip(f"needs the {self.backend} device: {missing}")
        assert missing is None, missing

    def runnable_artifact(self, art: Path, tmp_path_factory) -> Path:
        """The artifact this runtime runs (a device runtime builds it from `art` here)."""
        return art

    def test_backend_is_available(self):
        self._require_device()

    def test_export_runs_real_images_within_budget(
        self, cxr_model, artifacts, tmp_path_factory, precision
    ):
        from edgemed.artifact import load_artifact
        from edgemed.backends import open_runner, run_batches
        from edgemed.data import load_dataset
        from edgemed.evaluation.drift import drift_from_logits
        from edgemed.models.source import load_model_source
        from edgemed.pipeline.training import predict_logits

        self._require_device()
        path = self._export(cxr_model, artifacts, tmp_path_factory, precision)
        art = load_artifact(self.runnable_artifact(path, tmp_path_factory))
        assert art.manifest["runtime"] == self.backend and art.manifest["precision"] == precision
        test = load_dataset(CXR).split("test")
        with open_runner(art, threads=1) as runner:
            cand = run_batches(runner, art.contract, test.images)
        loaded = load_model_source(str(cxr_model))
        ref = predict_logits(loaded.module, loaded.contract, test.images)
        d = drift_from_logits(loaded.contract, ref, cand, test.labels)
        max_dp, max_flip, max_drop = BUDGETS[precision]
        assert np.isfinite(cand).all()
        assert d.max_abs_dp <= max_dp, d
        assert d.flip_rate <= max_flip, d
        assert d.auc_drop <= max_drop, d

    def test_manifest_records_drift_and_provenance(
        self, cxr_model, artifacts, tmp_path_factory, precision
    ):
        from edgemed.artifact import load_artifact

        m = load_artifact(self._export(cxr_model, artifacts, tmp_path_factory, precision)).manifest
        assert m["provenance"]["edgemed"]
        assert m["provenance"]["inputs"]["model"]
        assert m["drift"]["n"] > 0
        assert m["contract"]["class_names"] == ["normal", "pneumonia"]

    def check_unsupported_op_is_named(self, tmp_path, *needles: str) -> None:
        """A model with an op this runtime cannot convert: one error line naming op and node."""
        contract = tmp_path / "contract.json"
        contract.write_text(json.dumps(CXR_CONTRACT))
        before = tree_snapshot(tmp_path)
        res = run_cli(
            "export", "--model", "tests.backends.unsupported_models:det_net", "--contract",
            contract, "--data", CXR, "--target", self.backend, "--out", tmp_path / "x",
        )  # fmt: skip
        assert_user_error(res, *needles)
        assert tree_snapshot(tmp_path) == before

    def test_int8_artifact_counts_its_int8_ops(
        self, cxr_model, artifacts, tmp_path_factory, precision
    ):
        """Quantized means quantized: the INT8 artifact's own file has INT8 compute ops."""
        if precision != "int8":
            pytest.skip("only INT8 artifacts count INT8 compute ops")
        from edgemed.artifact import load_artifact
        from edgemed.backends.int8_ops import count_int8

        art = self._export(cxr_model, artifacts, tmp_path_factory, precision)
        ops = load_artifact(art).manifest["backend"]["int8_ops"]
        assert 0 < ops["quantized"] <= ops["total"], ops
        assert ops["words"] == f"{ops['quantized']} of {ops['total']} compute ops in INT8"
        recount = count_int8(art / load_artifact(art).manifest["model_file"])
        assert recount.to_dict() == ops
