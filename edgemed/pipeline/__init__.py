"""The pipeline stages, each a function from one value to the next:

model source (edgemed.models) -> `training.train` -> reference ONNX (`edgemed.onnx_export`) ->
calibration set (`calibration.py`) -> backend convert (`edgemed.backends`) -> evaluate
(`edgemed.evaluation`) -> commit (`export.run_export`, atomic); `fallback` is accuracy control
(keep the most sensitive layers in float), `engine_build` builds TensorRT engines on the device.

The package root keeps only the shared nouns these stages pass along (contract, artifact,
profiles, calibration sets, ONNX files, errors, file I/O, provenance, signing).
"""
