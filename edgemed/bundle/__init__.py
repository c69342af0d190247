"""The signed appliance bundle: one uncompressed tar that a hospital edge box verifies and runs.

Layout (member order is fixed: manifest, signature, then every other file sorted by name; regular
files only, relative names, no directories, links or devices):

    bundle-manifest.json      file table (SHA-256 + size of every other file), versions, gate
    bundle-manifest.sig       Ed25519 signature of the exact bytes of bundle-manifest.json
    contract.json             preprocessing contract: input size, normalization, class names,
                              task and operating threshold
    model/...                 the runtime artifact, verbatim (model file(s), manifest.json, card.json)
    calibration-manifest.json the INT8 calibration manifest, when the artifact records one
    report/results.json       the `edgemed bench` report the release gate checked
    report/report.html        its human-readable page, when the bench run wrote one

Building lives in `edgemed.bundle.build` (publisher side, with the release gate in
`edgemed.bundle.gate`); verifying and running live in `edgemed.appliance` (the edge box side).
Importing this package imports nothing heavy.
"""

from __future__ import annotations

FORMAT = "edgemed-bundle/1"
MANIFEST_NAME = "bundle-manifest.json"
SIGNATURE_NAME = "bundle-manifest.sig"
CONTRACT_NAME = "contract.json"
MODEL_DIR = "model"
CALIBRATION_NAME = "calibration-manifest.json"
REPORT_DIR = "report"
MAX_MANIFEST_BYTES = 16 << 20
