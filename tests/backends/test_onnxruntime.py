from tests.backends.template import BackendTemplate


class TestOnnxRuntime(BackendTemplate):
    backend = "onnx"
    precisions = ("fp32",)
