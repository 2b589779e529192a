"""How the networks run: PyTorch, or a runtime from ``TABLE`` over files in
the model folder. The table is light data (names, file patterns, the module
that implements each), so the command line lists ``RUNTIMES`` and the Hub
picks files without importing torch; ``registry`` walks it and imports a
runtime's module only to use it. A new runtime is one module whose
``RUNTIME`` implements ``plankton.runtime.interface.Runtime``, plus one line
in ``TABLE``."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RuntimeSpec:
    """One runtime as the table knows it without importing it."""

    key: str  # its entry in "auto"'s why-not list
    label: str  # what messages call its files ("not using the INT8 files")
    titles: dict = field(hash=False)  # each --runtime spelling it answers to → what ``plankton info`` calls it
    files: tuple[str, ...]  # glob patterns of its files in a model folder: what a Hub download fetches for it
    module: str  # whose ``RUNTIME`` implements it

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.titles)

    def runtime(self):
        """Its ``interface.Runtime`` (imports its module, and so torch)."""
        return importlib.import_module(self.module).RUNTIME


# What runtime="auto" tries, fastest first; PyTorch comes after them all and always works.
TABLE = (
    RuntimeSpec("int8", "INT8", {"int8": "INT8 (the files the model ships)", "onnx-int8": "ONNX Runtime INT8", "openvino-int8": "OpenVINO INT8"},
                ("*.int8.xml", "*.int8.bin", "*.int8.onnx"), "plankton.runtime.quantized"),
    RuntimeSpec("onnx", "ONNX", {"onnx": "fp32 ONNX Runtime"}, ("detector.onnx", "embedder.onnx"), "plankton.runtime.onnx"),
)


def runtime_names() -> tuple[str, ...]:
    """"torch", the table's names slowest first, "auto"."""
    return ("torch",) + tuple(n for spec in reversed(TABLE) for n in spec.names) + ("auto",)


def spec_for(name: str) -> RuntimeSpec | None:
    """The table's runtime that answers to ``name`` (None: "torch", "auto" or unknown)."""
    return next((s for s in TABLE if name in s.names), None)


def runtime_files() -> list[str]:
    """Every runtime's file patterns, once each."""
    return list(dict.fromkeys(p for spec in TABLE for p in spec.files))


RUNTIMES = runtime_names()
INT8_RUNTIMES = spec_for("int8").names
