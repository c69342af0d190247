"""The evaluation core: output sanity, drift, statistics, metrics and limits.

Every place that judges a converted model (export's budget and accuracy control, build-engine's
re-check, bench's gate, the bundle's release gate, predict's output check) goes through here:
`check_outputs` first, then `drift_from_logits`, then `verdict(limits, drift)`.
"""
