"""The appliance as a hospital service (`edgemed serve`): DICOM in, DICOM SR out, nothing lost.

    config     settings (TOML keys = CLI flags)
    spool      durable queue keyed by SOP Instance UID
    dicom_scp  C-STORE SCP (pynetdicom)
    intake     header checks, STOW-RS parsing
    sr         the Comprehensive SR (highdicom) and deterministic UIDs
    forwarder  C-STORE of SRs with retries, backoff, dead letters
    http       health, metrics, results, predict, STOW-RS
    audit      hash-chained JSONL audit log
    service    the pieces together; bundle swap
    monitor_report  `edgemed monitor`: the surveillance report from a spool (edgemed.domain)
Never imports torch: the model runs through `edgemed.appliance.load`.
"""
