"""The target harness: drift against the FP32 reference, latency, memory, reports."""
