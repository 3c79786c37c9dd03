"""edgeformer: Transformer models from PyTorch to devices, with parity at every step.

Importing the package is cheap and needs neither torch nor onnx: the stages live in subpackages
(``edgeformer.nn`` needs torch; ``edgeformer.runtime`` needs only onnxruntime and numpy).
"""

__version__ = "0.1.0"
