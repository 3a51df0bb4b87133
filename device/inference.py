"""Run a converted model (``model.tflite``) on one normalised window, with LiteRT.

``ModelRunner.predict(window[L, C]) -> probabilities[K]`` is the gateway's hot
path: the input buffer is preallocated, a call is quantise (int8 only) →
``set_tensor`` → ``invoke`` → ``get_tensor`` → dequantise. Models with the fused
LSTM op keep state between invocations; for them (``stateful=True``) every call
resets the interpreter's variables first, so each window is classified alone.

A model converted with attention outputs (see :mod:`alanet.device.attention`) has
three outputs, named in its signature; ``outputs`` maps the roles ``probabilities``,
``temporal`` and ``body`` to those names, and :meth:`ModelRunner.attention` reads the
last window's weights after :meth:`ModelRunner.predict`.

LiteRT (``ai-edge-litert``) is used; ``tflite-runtime`` is a fallback for
platforms without a LiteRT wheel. No TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

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


ROLES = ("probabilities", "temporal", "body")


def _tensor_quant(detail: Mapping[str, Any]) -> Quant | None:
    if np.dtype(detail["dtype"]).kind == "f":
        return None
    scale, zp = detail["quantization"]
    return float(scale), int(zp)


def _outputs_by_role(it: Any, where: Path, outputs: Mapping[str, str] | None) -> dict[str, dict[str, Any]]:
    """Output tensor details by role; a single-output model without ``outputs`` is all probabilities."""
    details = it.get_output_details()
    if not outputs:
        if len(details) != 1:
            raise InputError(f"{where}: expected 1 output tensor, got {len(details)} (a model with attention "
                             "outputs needs the manifest's attention block)")
        return {"probabilities": details[0]}
    missing = [r for r in ROLES if r not in outputs]
    if missing:
        raise InputError(f"{where}: attention/outputs: role(s) {', '.join(missing)} missing")
    sigs = it.get_signature_list()
    if len(sigs) != 1:
        raise InputError(f"{where}: expected one signature to name the outputs, found {len(sigs)}")
    named = it.get_signature_runner(next(iter(sigs))).get_output_details()
    index = {int(d["index"]): d for d in details}
    out = {}
    for role in ROLES:
        name = outputs[role]
        if name not in named:
            raise InputError(f"{where}: attention/outputs/{role}: no output named {name!r} "
                             f"(the model has {', '.join(sorted(named))})")
        out[role] = index[int(named[name]["index"])]
    return out


class ModelRunner:
    """One LiteRT interpreter for a single-window classifier.

    ``input_quant`` / ``output_quant``: ``(scale, zero_point)`` of int8 tensors;
    when ``None`` they are read from the model's tensors (float tensors need none).
    ``outputs``: for a multi-output model, role → signature output name (roles
    ``probabilities``, ``temporal``, ``body``); a model without it must have one output.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        num_threads: int = 1,
        stateful: bool = False,
        input_quant: Quant | None = None,
        output_quant: Quant | None = None,
        outputs: Mapping[str, str] | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.stateful = bool(stateful)
        self._it = _make_interpreter(self.model_path, num_threads)
        self._it.allocate_tensors()
        inp = self._it.get_input_details()
        by_role = _outputs_by_role(self._it, self.model_path, outputs)
        out = [by_role["probabilities"]]
        if len(inp) != 1:
            raise InputError(f"{self.model_path}: expected 1 input tensor, got {len(inp)}")
        self._in_index = int(inp[0]["index"])
        self._out_index = int(out[0]["index"])
        self._att = {role: (int(d["index"]), _tensor_quant(d)) for role, d in by_role.items() if role != "probabilities"}
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

        att = m.get("attention")
        return cls(bundle.model_path, num_threads=num_threads, stateful=bool(m.get("stateful", False)),
                   input_quant=q(m["input"]), output_quant=q(m["output"]), outputs=att["outputs"] if att else None)

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

    @property
    def has_attention(self) -> bool:
        return bool(self._att)

    def attention(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(temporal [L], body [P])`` weights of the window last passed to :meth:`predict` (float32),
        or ``None`` for a model without attention outputs."""
        if not self._att:
            return None
        out = []
        for role in ("temporal", "body"):
            index, q = self._att[role]
            v = self._it.get_tensor(index).reshape(-1)
            out.append(((v.astype(np.float32) - q[1]) * q[0]).astype(np.float32) if q else v.astype(np.float32, copy=True))
        return out[0], out[1]

    def predict_many(self, windows: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """[N, K] probabilities for N windows, one invoke each."""
        return np.stack([self.predict(np.asarray(w, dtype=np.float32)) for w in windows]) if len(windows) else \
            np.zeros((0, self.n_outputs), np.float32)

    def ops(self) -> list[str]:
        """Operator names in the model graph (for ``alanet inspect``)."""
        return model_ops(self.model_path)
