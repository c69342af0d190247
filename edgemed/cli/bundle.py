"""`edgemed keygen`, `bundle`, `verify`, `predict`: the signed appliance bundle, both sides."""

from __future__ import annotations

from pathlib import Path

import click

from edgemed.cli.options import force_option, limit_options, max_pixels_option
from edgemed.errors import EdgemedError, InputError
from edgemed.evaluation.limits import BUNDLE_DEFAULTS


@click.command()
@click.option("--out", "out", required=True, type=click.Path(), help="Directory for the key pair.")
@force_option
def keygen(out, force) -> None:
    """Create an Ed25519 key pair: OUT/edgemed.key (private, mode 0600) and OUT/edgemed.pub."""
    from edgemed.signing import git_work_tree_warning, write_keypair  # lazy: --help

    priv, pub = write_keypair(Path(out), force)
    warning = git_work_tree_warning(priv)
    if warning:
        click.echo(warning, err=True)
    click.echo(f"private key {priv} (mode 0600: keep it secret, sign with it)")
    click.echo(f"public key  {pub} (give it to every appliance that verifies your bundles)")


@click.command()
@click.option("--model", type=click.Path(), help="Artifact dir from `edgemed export`.")
@click.option("--report", type=click.Path(), help="Bench dir from `edgemed bench`.")
@click.option(
    "--selection",
    type=click.Path(file_okay=False),
    help="A sweep's --out: bundle the artifact it chose for --device, with the bench evidence "
    "that chose it (instead of --model and --report); the rule and candidates are signed in.",
)
@click.option("--device", help="With --selection: the device (see the sweep's selection.json).")
@click.option("--key", required=True, type=click.Path(), help="Private key (KEYDIR/edgemed.key).")
@click.option("--out", "out", required=True, type=click.Path(), help="Bundle file to write.")
@limit_options(BUNDLE_DEFAULTS)
@click.option(
    "--override-gate",
    "override_reason",
    metavar="REASON",
    help="Bundle even if the gate fails; REASON and the failed checks are signed into the manifest.",
)
@click.option(
    "--modality",
    "modalities",
    multiple=True,
    metavar="CODE",
    help="DICOM Modality the model takes (repeatable, e.g. CR, DX); predict refuses others.",
)
@click.option("--description", help="What the model takes, for messages (default: from the card).")
@click.option(
    "--domain-policy",
    type=click.Choice(["flag", "refuse"]),
    default="flag",
    show_default=True,
    help="An image outside the validated domain: report the finding marked (flag) or none (refuse).",
)
@click.option(
    "--max-domain-fpr",
    type=click.FloatRange(0.0, 1.0),
    help="Refuse unless the domain guard flagged at most this share of in-domain test images "
    "(measured by `bench --ood`).",
)
@click.option(
    "--min-ood-auroc",
    type=click.FloatRange(0.0, 1.0),
    help="Refuse unless the domain guard's AUROC is at least this on every `bench --ood` set.",
)
@force_option
def bundle(
    model,
    report,
    selection,
    device,
    key,
    out,
    limits_given,
    override_reason,
    modalities,
    description,
    domain_policy,
    max_domain_fpr,
    min_ood_auroc,
    force,
) -> None:
    """Pack ARTIFACT + contract + bench evidence into one signed bundle (release gate first)."""
    from edgemed.bundle.build import BundleRequest, build_bundle  # lazy: --help
    from edgemed.bundle.gate import gate_limits  # lazy: --help

    model, report, record = _model_and_report(model, report, selection, device)
    req = BundleRequest(
        model=Path(model),
        report=Path(report),
        selection=record,
        key=Path(key),
        out=Path(out),
        limits=gate_limits(limits_given),
        override_reason=override_reason,
        force=force,
        modalities=tuple(modalities),
        description=description,
        domain_policy=domain_policy,
        max_domain_fpr=max_domain_fpr,
        min_ood_auroc=min_ood_auroc,
    )
    m = build_bundle(req)
    gate = m["gate"]
    click.echo(f"bundle {m['bundle_id']} ({m['model']['label']}, {len(m['files'])} files) -> {out}")
    if gate["decision"] == "overridden":
        click.echo(
            f"release gate OVERRIDDEN: {gate['override_reason']} (failed: {'; '.join(gate['failed'])})"
        )
    else:
        click.echo(f"release gate passed: {'; '.join(c['detail'] for c in gate['checks'])}")
    if not m.get("domain"):
        click.echo("note: the model carries no domain reference; every result says domain unknown")
    if not m["input"]["modalities"]:
        click.echo("note: no --modality given; the appliance will not check the DICOM Modality")
    if record and record.get("proxy"):
        click.echo(f"note: the sweep measured this choice on a proxy: {'; '.join(record['proxy'])}")


def _model_and_report(model, report, selection, device) -> tuple[str, str, dict | None]:
    """--model/--report as given, or what the sweep at --selection chose for --device."""

    if selection is None:
        if device is not None:
            raise InputError("--device needs --selection SWEEP (the sweep that chose for it)")
        if model is None or report is None:
            raise InputError(
                "give --model ARTIFACT and --report BENCH, or --selection SWEEP --device NAME"
            )
        return model, report, None
    if model is not None or report is not None:
        raise InputError(
            "--selection takes the artifact and report from the sweep; drop --model/--report"
        )
    if device is None:
        raise InputError("--selection needs --device NAME (a device of the sweep's selection.json)")
    from edgemed.bundle.selection import sweep_choice

    choice = sweep_choice(Path(selection), device)
    return str(choice.artifact), str(choice.report), choice.record


def limit_options(fn):
    """--max-bundle-mb / --max-members: what a bundle may be before a byte of it is trusted."""
    fn = click.option(
        "--max-members",
        type=click.IntRange(min=3),
        default=1000,
        show_default=True,
        help="Refuse bundles with more tar members.",
    )(fn)
    return click.option(
        "--max-bundle-mb",
        type=click.IntRange(min=1),
        default=1024,
        show_default=True,
        help="Refuse bundles larger than this (MiB).",
    )(fn)


def _limits(max_bundle_mb: int, max_members: int):
    from edgemed.appliance.tarstream import Limits  # lazy: --help

    return Limits(max_bundle_bytes=max_bundle_mb << 20, max_members=max_members)


@click.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path())
@click.option("--pubkey", required=True, type=click.Path(), help="Publisher's public key (.pub).")
@limit_options
def verify(bundle_path, pubkey, max_bundle_mb, max_members) -> None:
    """Check BUNDLE: archive safety, signature, every file and hash, runtime; one line per check."""
    from edgemed.appliance.verify import verify_bundle  # lazy: --help

    limits = _limits(max_bundle_mb, max_members)
    verify_bundle(Path(bundle_path), Path(pubkey), echo=click.echo, limits=limits)
    click.echo(f"verified {bundle_path}")


@click.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path())
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("--pubkey", required=True, type=click.Path(), help="Publisher's public key (.pub).")
@click.option(
    "--threads", type=click.IntRange(min=1), help="Intra-op threads (default: the runtime's)."
)
@limit_options
@max_pixels_option
def predict(bundle_path, images, pubkey, threads, max_bundle_mb, max_members) -> None:
    """Verify BUNDLE, then print one JSON object per IMAGE (PNG, JPEG or DICOM).

    Every image gets a record, an unreadable or refused one too (`status` and the reason); the
    exit status is non-zero at the end when any image was refused or could not be read."""
    from edgemed.appliance import load, result_line  # lazy: --help
    from edgemed.errors import InputError  # lazy: --help

    limits = _limits(max_bundle_mb, max_members)
    bad: list[dict] = []
    with load(Path(bundle_path), Path(pubkey), threads, limits=limits) as predictor:
        for path in images:
            result = _predict_one(predictor, path)
            if result["status"] != "ok":
                bad.append(result)
            click.echo(result_line(result))
    if bad:
        first = bad[0].get("domain_reason") or bad[0].get("reason")
        raise InputError(
            f"{len(bad)} of {len(images)} images were refused or unreadable (see status; "
            f"first, {bad[0]['image']}: {first})"
        )


def _predict_one(predictor, path: str) -> dict:
    """One image's record: the result, or `unreadable` (the file) / `failed` (the model's output)
    with the reason; never an exception, so every other image still gets its record."""
    import time

    t0 = time.perf_counter()
    try:
        image = predictor.prepare(path)
    except EdgemedError as exc:
        return {"image": str(path), "status": "unreadable", "reason": str(exc)}
    try:
        return predictor.predict_image(image, str(path), t0)
    except EdgemedError as exc:
        return {"image": str(path), "status": "failed", "reason": str(exc)}
