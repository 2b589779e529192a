"""How the networks run: PyTorch, ONNX Runtime, OpenVINO INT8, and the one
registry of runtime names (here, so that the command line can list them
without importing torch; ``registry`` loads them)."""

RUNTIMES = ("torch", "onnx", "int8", "onnx-int8", "openvino-int8", "auto")
INT8_RUNTIMES = {"int8": None, "onnx-int8": "onnxruntime", "openvino-int8": "openvino"}  # name → route (None: the artifact's)
