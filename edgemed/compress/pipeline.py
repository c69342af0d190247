"""`run_compress`: load -> measure before -> compress -> fine-tune -> re-threshold -> measure
after -> write a training output dir (model.pt + card.json) atomically."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

from edgemed.compress.method import Subject
from edgemed.compress.request import CompressRequest, check_request
from edgemed.contract import Contract
from edgemed.data import Dataset, model_dataset
from edgemed.errors import InputError
from edgemed.fileio import refuse_existing, staged_dir, write_json_atomic
from edgemed.models import ZOO, ModelSpec, build_model
from edgemed.models.checkpoint import save_checkpoint
from edgemed.models.complexity import measure_complexity
from edgemed.models.source import LoadedModel, load_model_source
from edgemed.pipeline.training import evaluate, operating_threshold, predict_logits
from edgemed.provenance import provenance


def run_compress(req: CompressRequest) -> dict:
    """Compress one model by one method; returns the written model card."""
    check_request(req)
    refuse_existing(Path(req.out), req.force)
    import torch

    if req.threads:
        torch.set_num_threads(req.threads)
    method = req.spec
    reference = subject_from(req.teacher if method.student else req.model, "model")
    ds = dataset_for(reference, req.data)
    before = measure(reference.module, reference.spec, reference.contract, ds)
    target = student_for(req, reference) if method.student else reference
    outcome = method.run(target, reference, ds, req)
    contract = rethreshold(outcome.module, reference.contract, ds)
    after = measure(outcome.module, outcome.spec, contract, ds)
    card = compression_card(req, reference, target, outcome, contract, ds, before, after)

    with staged_dir(Path(req.out), req.force) as tmp:
        save_checkpoint(tmp / "model.pt", outcome.module, outcome.spec, contract)
        write_json_atomic(tmp / "card.json", card)
    return card


def subject_from(model: str, what: str) -> Subject:
    """A trained torch model from a training dir or .pt checkpoint."""
    loaded: LoadedModel = load_model_source(model)
    if loaded.kind != "torch":
        raise InputError(
            f"{what} {model} is an ONNX file; compression needs the torch model (training dir or .pt)"
        )
    arch = loaded.source["arch"]
    spec = ModelSpec(arch["name"], dict(arch["kwargs"]))
    return Subject(loaded.module, spec, loaded.contract, loaded.source, loaded.card)


def student_for(req: CompressRequest, teacher: Subject) -> Subject:
    """The student of a student method: a fresh zoo/factory model (seeded), or a trained model dir."""
    import torch

    if Path(req.model).expanduser().exists():
        student = subject_from(req.model, "student")
        c, t = student.contract, teacher.contract
        if (c.input_size, c.channels, c.num_outputs) != (t.input_size, t.channels, t.num_outputs):
            raise InputError(
                f"student {req.model} takes {c.input_size} x {c.channels} with {c.num_outputs} outputs, "
                f"the teacher {t.input_size} x {t.channels} with {t.num_outputs}; use matching models"
            )
        return student
    if req.model not in ZOO and ":" not in req.model:
        raise InputError(
            f"student model {req.model!r} not found; give a zoo name ({', '.join(ZOO)}), "
            "package.module:factory or a training output dir"
        )
    torch.manual_seed(req.seed)
    spec = ModelSpec(req.model, dict(req.model_args))
    module = build_model(
        spec, teacher.contract.channels, teacher.contract.num_outputs, factory=req.model
    )
    return Subject(module, spec, teacher.contract, {"kind": "fresh", "arch": spec.to_dict()})


def dataset_for(subject: Subject, data: str | None) -> Dataset:
    """The model's own data and split (from its card); `--data` overrides the path."""
    c = subject.contract
    ds = model_dataset(subject.card, data, c.input_size, c.channels, card_split=True)
    if ds is None:
        raise InputError("the model has no card.json naming its training data; pass --data PATH")
    return ds


def measure(module, spec: ModelSpec, contract: Contract, ds: Dataset) -> dict:
    """Parameters, MACs, checkpoint size (raw and gzip -9) and test metrics of one model."""

    module.eval()
    c = measure_complexity(module, contract.input_shape(1))
    raw = checkpoint_bytes(module, spec, contract)
    test = ds.split("test")
    metrics = evaluate(contract, test.labels, predict_logits(module, contract, test.images))
    return {
        "params": c.params,
        "macs": c.macs,
        "size_bytes": len(raw),
        "size_gzip_bytes": len(gzip.compress(raw, 9)),
        "test_auc": metrics["auc"],
        "test_auc_ci95": metrics.get("auc_ci95"),
        "test": metrics,
    }


def checkpoint_bytes(module, spec: ModelSpec, contract: Contract) -> bytes:
    """The bytes `model.pt` would have on disk."""

    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(Path(d) / "model.pt", module, spec, contract)
        return (Path(d) / "model.pt").read_bytes()


def rethreshold(module, contract: Contract, ds: Dataset) -> Contract:
    """Binary and multilabel: choose the operating threshold(s) again on validation (Youden), as
    `edgemed train` does."""

    if contract.task == "multiclass":
        return contract
    val = ds.split("val")
    scores = contract.scores(predict_logits(module.eval(), contract, val.images))
    return contract.with_threshold(operating_threshold(contract, val.labels, scores))


def compression_card(req, reference, target, outcome, contract, ds, before, after) -> dict:
    """The model card of the compressed model: the usual training-card keys plus `compression`."""
    short = {k: v for k, v in after.items() if k != "test"}
    compression = {
        "method": req.method,
        "settings": req.settings(),
        "source": reference.source,
        "student": target.source if req.spec.student else None,
        "before": {k: v for k, v in before.items() if k != "test"},
        "after": short,
        "auc_drop": before["test_auc"] - after["test_auc"],
        "param_ratio": after["params"] / before["params"],
        "mac_ratio": after["macs"] / max(1, before["macs"]),
        "details": outcome.details,
    }
    inputs = {"data": ds.data_hash, "model": reference.source.get("sha256", "")}
    return {
        "model": outcome.spec.to_dict(),
        "complexity": {
            "params": after["params"],
            "macs": after["macs"],
            "input_shape": list(contract.input_shape(1)),
        },
        "test": after["test"],
        "training": {"kind": f"{req.method} fine-tune", **outcome.fit.to_dict()},
        "data": ds.summary(),
        "contract": contract.to_dict(),
        "config": req.to_dict(),
        "compression": compression,
        "provenance": provenance(inputs=inputs, config=req.to_dict()),
    }
