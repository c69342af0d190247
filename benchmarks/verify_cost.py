"""Cost of bundle verification (issue 13): MB/s of `verify_bundle` on a 50 MB signed bundle.

    python benchmarks/verify_cost.py [--mb 50] [--repeats 5] [--write]

Builds (in a temp dir) a signed bundle with edgemed's own writer (`write_bundle_tar`, the member
order `edgemed bundle` uses) holding a MB-sized model file of random bytes plus a contract and a
report, signed with a fresh Ed25519 key. Then times, fastest of the repeats (the run least
disturbed on a shared machine):

- sha256 of the file alone (the floor: one read + hash of every byte);
- `verify_bundle` without extraction (`edgemed verify`): bounded tar read, signature, every member
  hashed against the signed table, end-of-archive check, whole-file SHA-256;
- `verify_bundle` with extraction (`edgemed predict` / `appliance.load`): as above, plus each
  verified member read a second time, copied into the private dir and hashed again.

MB/s = bundle bytes / seconds. The file is in the page cache after the first run, so this is the
CPU cost of verification, not disk speed. `--write` puts the table into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._markdown import load_average, replace_section, table  # noqa: E402


def build(root: Path, mb: int) -> tuple[Path, Path]:
    from edgemed.bundle import FORMAT
    from edgemed.bundle.build import manifest_bytes, write_bundle_tar
    from edgemed.provenance import package_version
    from edgemed.signing import fingerprint, load_private_key, write_keypair

    priv, pub = write_keypair(root / "keys")
    key = load_private_key(priv)
    files = {
        "model/model.onnx": os.urandom(mb << 20),
        "contract.json": b'{"input_size": [28, 28]}\n',
        "report/results.json": b"{}\n",
    }
    manifest = {
        "format": FORMAT,
        "bundle_id": "verify-cost",
        "files": {
            n: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()
        },
        "model": {"label": f"{mb} MB random model file"},
        "runtime": {
            "name": "onnx",
            "package": "onnxruntime",
            "version": package_version("onnxruntime") or "1.0",
        },
        "documents": {},
        "gate": {"decision": "passed", "checks": []},
        "signer": {"public_key_sha256": fingerprint(key.public_key())},
    }
    data = manifest_bytes(manifest)
    out = root / "cost.bundle"
    write_bundle_tar(out, data, key.sign(data), files)
    return out, pub


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    from edgemed.appliance.verify import verify_bundle
    from edgemed.fileio import sha256_file

    root = Path(tempfile.mkdtemp(prefix="verify-cost-"))
    try:
        bundle, pub = build(root, args.mb)
        size = bundle.stat().st_size
        load = load_average()

        def extract() -> None:
            dest = Path(tempfile.mkdtemp(dir=root))
            verify_bundle(bundle, pub, extract_to=dest)
            shutil.rmtree(dest)

        rows = []
        for name, fn in [
            ("sha256 of the file (floor)", lambda: sha256_file(bundle)),
            ("verify (`edgemed verify`)", lambda: verify_bundle(bundle, pub)),
            ("verify + extract (`predict`, `appliance.load`)", extract),
        ]:
            s = best(fn, args.repeats)
            rows.append([name, f"{s * 1e3:.0f}", f"{size / 2**20 / s:.0f}"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    body = (
        f"`python benchmarks/verify_cost.py --mb {args.mb} --repeats {args.repeats} --write`; "
        f"bundle {size / 2**20:.1f} MB (random {args.mb} MB model file), fastest of "
        f"{args.repeats}, file in the page cache; {load}.\n\n"
        + table(["what", "ms", "MB/s"], rows)
        + "\n\nVerification reads the archive once and hashes every byte once more for the "
        "whole-file SHA-256 (reported as `bundle_sha256`); extraction re-reads each verified "
        "member and hashes it again while copying (nothing unsigned is written)."
    )
    print(body)
    print(json.dumps({"rows": rows}))
    if args.write:
        replace_section("Bundle verification cost", body)


if __name__ == "__main__":
    main()
