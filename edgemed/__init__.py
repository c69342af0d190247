"""edgemed: take compact medical image classifiers to edge hardware and prove they still work.

Importing this package is cheap: no runtime (torch, openvino, tensorflow, tensorrt) is imported
until a backend or the model zoo is used.
"""

from edgemed.errors import DriftError, EdgemedError, InputError, UnavailableError

__version__ = "0.1.0"

__all__ = ["EdgemedError", "InputError", "UnavailableError", "DriftError", "__version__"]
