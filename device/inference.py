"""Run a converted model (``model.tflite``) on one normalised window, with LiteRT.

``ModelRunner.predict(window[L, C]) -> probabilities[K]`` is the gateway's hot
path: the input buffer is preallocated, a call is quantise (int8 only) →
``set_tensor`` → ``invoke`` → ``get_tensor`` → dequantise. Models with the fused
LSTM op keep state between invocations; for them (``stateful=True``) every call
resets the interpreter's variables first, so each window is classified alone.

LiteRT (``ai-edge-litert``) is used; ``tflite-runtime`` is a fallback for
platforms without a LiteRT wheel. No TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from alanet.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from alanet.device.bundle import Bundle

Quant = tuple[float, int]


def interpreter_class() -> Any:
    """The LiteRT ``Interpreter`` class (or tflite-runtime's, if LiteRT is not installed)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
        except ImportError:
            raise InputError("no TFLite interpreter: install ai-edge-litert (pip install 'alanet-edge[device]')") from None
    return Interpreter


def _make_interpreter(model: str | os.PathLike[str] | bytes, num_threads: int | None, *, delegates: bool = True) -> Any:
    Interpreter = interpreter_class()
    kwargs: dict[str, Any] = {"num_threads": num_threads}
    if isinstance(model, (bytes, bytearray)):
        kwargs["model_content"] = bytes(model)
    else:
        kwargs["model_path"] = str(model)
    if not delegates:
        try:
            from ai_edge_litert.interpreter import OpResolverType
        except ImportError:  # tflite-runtime
            from tflite_runtime.interpreter import OpResolverType  # type: ignore[no-redef]
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        return Interpreter(**kwargs)
    except (ValueError, RuntimeError) as exc:
        where = "model" if isinstance(model, (bytes, bytearray)) else str(model)
        raise InputError(f"{where}: not a loadable TFLite model ({str(exc).strip().splitlines()[0] if str(exc) else exc})") from None


def model_ops(model: str | os.PathLike[str] | bytes) -> list[str]:
    """Names of the operators in the model graph (sorted, unique), without delegates."""
    it = _make_interpreter(model, 1, delegates=False)
    it.allocate_tensors()
    return sorted({d["op_name"] for d in it._get_ops_details()})


class ModelRunner:
    """One LiteRT interpreter for a single-window classifier.

    ``input_quant`` / ``output_quant``: ``(scale, zero_point)`` of int8 tensors;
    when ``None`` they are read from the model's tensors (float tensors need none).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        num_threads: int = 1,
        stateful: bool = False,
        input_quant: Quant | None = None,
        output_quant: Quant | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.stateful = bool(stateful)
        self._it = _make_interpreter(self.model_path, num_threads)
        self._it.allocate_tensors()
        inp = self._it.get_input_details()
        out = self._it.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise InputError(f"{self.model_path}: expected 1 input and 1 output tensor, got {len(inp)} and {len(out)}")
        self._in_index = int(inp[0]["index"])
        self._out_index = int(out[0]["index"])
        self.input_shape: tuple[int, ...] = tuple(int(s) for s in inp[0]["shape"])
        self.input_dtype = np.dtype(inp[0]["dtype"])
        self.output_dtype = np.dtype(out[0]["dtype"])
        if len(self.input_shape) != 3 or self.input_shape[0] != 1:
            raise InputError(f"{self.model_path}: input shape {list(self.input_shape)}, expected [1, L, C]")
        self.window_shape = self.input_shape[1:]
        self.n_outputs = int(np.prod(out[0]["shape"][1:]))

        def quant(given: Quant | None, detail: dict[str, Any], dtype: np.dtype) -> Quant | None:
            if dtype.kind == "f":
                return None
            q = given if given is not None else tuple(detail["quantization"])
            scale, zp = float(q[0]), int(q[1])
            if not scale > 0:
                raise InputError(f"{self.model_path}: {dtype} tensor without a quantisation scale")
            return scale, zp

        self.input_quant = quant(input_quant, inp[0], self.input_dtype)
        self.output_quant = quant(output_quant, out[0], self.output_dtype)
        self._buf = np.zeros(self.input_shape, dtype=self.input_dtype)
        if self.input_quant:
            info = np.iinfo(self.input_dtype)
            self._qmin, self._qmax = float(info.min), float(info.max)
            self._inv_scale = np.float32(1.0 / self.input_quant[0])
            self._zp = np.float32(self.input_quant[1])
            self._tmp = np.zeros(self.window_shape, dtype=np.float32)

    @classmethod
    def from_bundle(cls, bundle: "Bundle", *, num_threads: int = 1) -> "ModelRunner":
        """A runner for a loaded bundle, with the quantisation and state flags of its manifest."""
        m = bundle.manifest

        def q(d: dict[str, Any]) -> Quant | None:
            return (float(d["scale"]), int(d["zero_point"])) if d.get("dtype") not in (None, "float32") else None

        return cls(bundle.model_path, num_threads=num_threads, stateful=bool(m.get("stateful", False)),
                   input_quant=q(m["input"]), output_quant=q(m["output"]))

    def predict(self, window: np.ndarray) -> np.ndarray:
        """Class probabilities [K] (float32) for one normalised window [L, C]."""
        if window.shape != self.window_shape:
            raise ValueError(f"window shape {tuple(window.shape)}, model expects {self.window_shape}")
        if self.input_quant:
            np.multiply(window, self._inv_scale, out=self._tmp)
            self._tmp += self._zp
            np.rint(self._tmp, out=self._tmp)
            np.clip(self._tmp, self._qmin, self._qmax, out=self._tmp)
            self._buf[0] = self._tmp
        else:
            self._buf[0] = window
        it = self._it
        if self.stateful:
            it.reset_all_variables()
        it.set_tensor(self._in_index, self._buf)
        it.invoke()
        out = it.get_tensor(self._out_index).reshape(-1)
        if self.output_quant:
            scale, zp = self.output_quant
            return ((out.astype(np.float32) - zp) * scale).astype(np.float32)
        return out.astype(np.float32, copy=True)

    def predict_many(self, windows: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """[N, K] probabilities for N windows, one invoke each."""
        return np.stack([self.predict(np.asarray(w, dtype=np.float32)) for w in windows]) if len(windows) else \
            np.zeros((0, self.n_outputs), np.float32)

    def ops(self) -> list[str]:
        """Operator names in the model graph (for ``alanet inspect``)."""
        return model_ops(self.model_path)
