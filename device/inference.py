"""Run a converted model (``model.tflite``) on one normalised window, with LiteRT.

``ModelRunner.predict(window[L, C]) -> probabilities[K]`` is the gateway's hot
path: the input buffer is preallocated, a call is quantise (int8 only) →
``set_tensor`` → ``invoke`` → ``get_tensor`` → dequantise. Models with the fused
LSTM op keep state between invocations; for them (``stateful=True``) every call
resets the interpreter's variables first, so each window is classified alone.

``ModelRunner.predict_batch(windows[N, L, C]) -> probabilities[N, K]`` classifies
the windows due across wearers in as few invokes as the bundle allows: a bundle may
declare extra native batch sizes (``batch_sizes`` in its manifest), each run by its
own interpreter (resizing one interpreter per call is slow); N is split into those
sizes by measured invoke cost (:meth:`ModelRunner.plan`). Without them (old bundles)
``batch_sizes`` is ``(1,)`` and a batch is N single invokes.

A model converted with attention outputs (see :mod:`alanet.device.attention`) has
three outputs, named in its signature; ``outputs`` maps the roles ``probabilities``,
``temporal`` and ``body`` to those names, and :meth:`ModelRunner.attention` reads the
last window's weights after :meth:`ModelRunner.predict`
(:meth:`ModelRunner.attention_batch`: every window's, after ``predict_batch``).

LiteRT (``ai-edge-litert``) is used; ``tflite-runtime`` is a fallback for
platforms without a LiteRT wheel. No TensorFlow.
"""

from __future__ import annotations

import os
import time
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


class _Invoker:
    """One interpreter at one batch size: its input buffer and output tensor indices."""

    def __init__(self, model: str | os.PathLike[str], batch: int, num_threads: int,
                 outputs: Mapping[str, str] | None, window_shape: tuple[int, ...] | None) -> None:
        where = Path(model)
        it = _make_interpreter(where, num_threads)
        inp = it.get_input_details()
        if len(inp) != 1:
            raise InputError(f"{where}: expected 1 input tensor, got {len(inp)}")
        shape = tuple(int(s) for s in inp[0]["shape"])
        if len(shape) != 3:
            raise InputError(f"{where}: input shape {list(shape)}, expected [{batch}, L, C]")
        if window_shape is not None and shape[1:] != window_shape:
            raise InputError(f"{where}: input window {list(shape[1:])}, the batch-1 model has {list(window_shape)}")
        if shape[0] != batch:
            dynamic = [int(s) for s in inp[0].get("shape_signature", shape)][0] == -1
            if not dynamic:
                raise InputError(f"{where}: input batch {shape[0]}, manifest says {batch} (and the batch is not dynamic)")
            it.resize_tensor_input(int(inp[0]["index"]), [batch, *shape[1:]])
            shape = (batch, *shape[1:])
        it.allocate_tensors()
        inp = it.get_input_details()
        by_role = _outputs_by_role(it, where, outputs)
        self.it = it
        self.batch = batch
        self.input_detail = inp[0]
        self.output_detail = by_role["probabilities"]
        self.in_index = int(inp[0]["index"])
        self.out_index = int(by_role["probabilities"]["index"])
        self.att = {role: (int(d["index"]), _tensor_quant(d)) for role, d in by_role.items() if role != "probabilities"}
        self.input_shape = shape
        self.buf = np.zeros(shape, dtype=np.dtype(inp[0]["dtype"]))


class ModelRunner:
    """LiteRT interpreters for a window classifier: one at batch 1, one per extra native batch size.

    ``input_quant`` / ``output_quant``: ``(scale, zero_point)`` of int8 tensors;
    when ``None`` they are read from the model's tensors (float tensors need none).
    ``outputs``: for a multi-output model, role → signature output name (roles
    ``probabilities``, ``temporal``, ``body``); a model without it must have one output.
    ``batch_models``: extra native batch sizes → model file (a file per size, or the
    batch-1 file itself when its batch dimension is dynamic); :attr:`batch_sizes` lists
    them with 1. :meth:`predict_batch` splits a batch into these sizes.
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
        batch_models: Mapping[int, str | os.PathLike[str]] | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.stateful = bool(stateful)
        one = _Invoker(self.model_path, 1, num_threads, outputs, None)
        self._one = one
        self._it = one.it
        self._in_index = one.in_index
        self._out_index = one.out_index
        self._att = one.att
        self.input_shape: tuple[int, ...] = one.input_shape
        self.input_dtype = np.dtype(one.input_detail["dtype"])
        self.output_dtype = np.dtype(one.output_detail["dtype"])
        self.window_shape = self.input_shape[1:]
        self.n_outputs = int(np.prod(one.output_detail["shape"][1:]))

        def quant(given: Quant | None, detail: dict[str, Any], dtype: np.dtype) -> Quant | None:
            if dtype.kind == "f":
                return None
            q = given if given is not None else tuple(detail["quantization"])
            scale, zp = float(q[0]), int(q[1])
            if not scale > 0:
                raise InputError(f"{self.model_path}: {dtype} tensor without a quantisation scale")
            return scale, zp

        self.input_quant = quant(input_quant, one.input_detail, self.input_dtype)
        self.output_quant = quant(output_quant, one.output_detail, self.output_dtype)
        self._buf = one.buf
        if self.input_quant:
            info = np.iinfo(self.input_dtype)
            self._qmin, self._qmax = float(info.min), float(info.max)
            self._inv_scale = np.float32(1.0 / self.input_quant[0])
            self._zp = np.float32(self.input_quant[1])
            self._tmp = np.zeros(self.window_shape, dtype=np.float32)
        self._by_size: dict[int, _Invoker] = {1: one}
        for size, path in sorted((batch_models or {}).items()):
            size = int(size)
            if size < 2:
                raise InputError(f"{path}: batch size {size}: extra batch sizes must be >= 2")
            inv = _Invoker(path, size, num_threads, outputs, self.window_shape)
            if np.dtype(inv.input_detail["dtype"]) != self.input_dtype or \
                    np.dtype(inv.output_detail["dtype"]) != self.output_dtype:
                raise InputError(f"{path}: input/output types differ from the batch-1 model's")
            if int(np.prod(inv.output_detail["shape"][1:])) != self.n_outputs:
                raise InputError(f"{path}: {int(np.prod(inv.output_detail['shape'][1:]))} outputs, "
                                 f"the batch-1 model has {self.n_outputs}")
            if bool(inv.att) != bool(self._att):
                raise InputError(f"{path}: attention outputs differ from the batch-1 model's")
            self._by_size[size] = inv
        self.batch_sizes: tuple[int, ...] = tuple(sorted(self._by_size))
        self._cost: dict[int, float] | None = None
        self._plans: dict[int, tuple[int, ...]] = {}
        self._last_att: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_bundle(cls, bundle: "Bundle", *, num_threads: int = 1) -> "ModelRunner":
        """A runner for a loaded bundle, with the quantisation and state flags of its manifest."""
        m = bundle.manifest

        def q(d: dict[str, Any]) -> Quant | None:
            return (float(d["scale"]), int(d["zero_point"])) if d.get("dtype") not in (None, "float32") else None

        att = m.get("attention")
        return cls(bundle.model_path, num_threads=num_threads, stateful=bool(m.get("stateful", False)),
                   input_quant=q(m["input"]), output_quant=q(m["output"]), outputs=att["outputs"] if att else None,
                   batch_models=bundle.batch_models)

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
        return self._dequant(it.get_tensor(self._out_index).reshape(-1), self.output_quant)

    @property
    def has_attention(self) -> bool:
        return bool(self._att)

    def attention(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(temporal [L], body [P])`` weights of the window last passed to :meth:`predict` (float32),
        or ``None`` for a model without attention outputs."""
        if not self._att:
            return None
        (ti, tq), (bi, bq) = self._att["temporal"], self._att["body"]
        return (self._dequant(self._it.get_tensor(ti).reshape(-1), tq),
                self._dequant(self._it.get_tensor(bi).reshape(-1), bq))

    def predict_many(self, windows: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """[N, K] probabilities for N windows (:meth:`predict_batch`)."""
        if not len(windows):
            return np.zeros((0, self.n_outputs), np.float32)
        return self.predict_batch(np.asarray(windows, dtype=np.float32))

    def predict_batch(self, windows: np.ndarray) -> np.ndarray:
        """Class probabilities [N, K] (float32) for N normalised windows [N, L, C].

        The same probabilities as N :meth:`predict` calls (to float tolerance). The N
        windows run in chunks of the native :attr:`batch_sizes` chosen by :meth:`plan`
        (a remainder is padded up to a native size when that is measured cheaper); the
        attention weights of all N windows are then read by :meth:`attention_batch`.
        """
        x = np.asarray(windows)
        if x.ndim != 3 or x.shape[1:] != self.window_shape:
            raise ValueError(f"windows shape {tuple(x.shape)}, model expects [N, {', '.join(map(str, self.window_shape))}]")
        return self._run(self._chunks(x, self.plan(len(x))), len(x))

    def predict_at(self, size: int, windows: np.ndarray) -> np.ndarray:
        """Probabilities [N, K] of N <= ``size`` windows from one invoke of the batch-``size`` model
        (padded with zero windows); the self-test runs every model file of a bundle this way."""
        x = np.asarray(windows)
        if size not in self._by_size:
            raise ValueError(f"batch {size} is not a native size of this model ({self.batch_sizes})")
        if x.ndim != 3 or x.shape[1:] != self.window_shape or not 0 < len(x) <= size:
            raise ValueError(f"windows shape {tuple(x.shape)}, expected [1..{size}, "
                             f"{', '.join(map(str, self.window_shape))}]")
        return self._run([(size, x)], len(x))

    @staticmethod
    def _chunks(x: np.ndarray, plan: tuple[int, ...]) -> list[tuple[int, np.ndarray]]:
        out, start = [], 0
        for size in plan:
            out.append((size, x[start:start + size]))
            start += size
        return out

    def _run(self, chunks: list[tuple[int, np.ndarray]], n: int) -> np.ndarray:
        """One invoke per (native size, windows) chunk; probabilities [n, K], attention kept."""
        probs = np.empty((n, self.n_outputs), np.float32)
        temporal: list[np.ndarray] = []
        body: list[np.ndarray] = []
        start = 0
        for size, chunk in chunks:
            take = len(chunk)
            inv = self._by_size[size]
            self._fill(inv, chunk)
            if self.stateful:
                inv.it.reset_all_variables()
            inv.it.set_tensor(inv.in_index, inv.buf)
            inv.it.invoke()
            probs[start:start + take] = self._dequant(inv.it.get_tensor(inv.out_index).reshape(size, -1)[:take],
                                                      self.output_quant)
            if inv.att:
                t, b = (self._dequant(inv.it.get_tensor(inv.att[r][0]).reshape(size, -1)[:take], inv.att[r][1])
                        for r in ("temporal", "body"))
                temporal.append(t)
                body.append(b)
            start += take
        self._last_att = (np.concatenate(temporal), np.concatenate(body)) if temporal else None
        return probs

    def attention_batch(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(temporal [N, L], body [N, P])`` weights of the windows of the last :meth:`predict_batch`
        (float32), or ``None`` for a model without attention outputs (or before any batch)."""
        return self._last_att

    def plan(self, n: int) -> tuple[int, ...]:
        """The native batch sizes (in order) that classify ``n`` windows at the least measured cost.

        Each native size's invoke is timed once (best of a few) on first use; the plan
        minimises the summed cost over chunks, where the last chunk may be padded up to a
        larger native size when one padded invoke costs less than its windows one by one.
        """
        if n <= 0:
            return ()
        if len(self.batch_sizes) == 1:
            return (1,) * n
        plan = self._plans.get(n)
        if plan is None:
            cost = self.invoke_costs()
            best = [0.0] + [float("inf")] * n
            choice = [0] * (n + 1)
            for m in range(1, n + 1):
                for size, c in cost.items():
                    total = c + best[max(0, m - size)]
                    if total < best[m]:
                        best[m], choice[m] = total, size
            out, m = [], n
            while m > 0:
                out.append(choice[m])
                m = max(0, m - choice[m])
            plan = tuple(sorted(out, reverse=True))
            if len(self._plans) < 4096:
                self._plans[n] = plan
        return plan

    def invoke_costs(self, repeats: int = 5) -> dict[int, float]:
        """Seconds per invoke at each native batch size (best of ``repeats``; measured once, on zero input)."""
        if self._cost is None:
            cost = {}
            for size, inv in self._by_size.items():
                best = float("inf")
                for _ in range(repeats + 1):
                    t0 = time.perf_counter()
                    if self.stateful:
                        inv.it.reset_all_variables()
                    inv.it.set_tensor(inv.in_index, inv.buf)
                    inv.it.invoke()
                    best = min(best, time.perf_counter() - t0)
                cost[size] = best
            # A larger batch never costs less than a smaller one: noise must not pick padding.
            for a, b in zip(sorted(cost), sorted(cost)[1:]):
                cost[b] = max(cost[b], cost[a])
            self._cost = cost
        return dict(self._cost)

    def _fill(self, inv: _Invoker, x: np.ndarray) -> None:
        """Write windows ``x`` (quantised for an int8 model) into the first rows of ``inv``'s input buffer."""
        k = len(x)
        if self.input_quant:
            q = np.rint(x * self._inv_scale + self._zp)
            np.clip(q, self._qmin, self._qmax, out=q)
            inv.buf[:k] = q
        else:
            inv.buf[:k] = x
        if k < inv.batch:
            inv.buf[k:] = 0

    @staticmethod
    def _dequant(v: np.ndarray, q: Quant | None) -> np.ndarray:
        return ((v.astype(np.float32) - q[1]) * q[0]).astype(np.float32) if q else v.astype(np.float32, copy=True)

    def ops(self) -> list[str]:
        """Operator names in the model graph (for ``alanet inspect``)."""
        return model_ops(self.model_path)
