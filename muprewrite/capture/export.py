"""Stage 1 — capture: run ``torch.export`` (non-strict) and name what the graph holds.

The result is a :class:`Capture`: the exported graph plus maps from placeholder nodes to
parameter / buffer names. Parameter names are the *canonical* ones of
``model.named_parameters()``: a tied weight exported under its alias is mapped back to the
name ``named_parameters()`` yields, by tensor identity. Tensors on the meta device stay
there, so capturing an 18B model allocates no parameter memory.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import re
import sysconfig
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import nn
from torch.export.graph_signature import ExportGraphSignature, OutputKind, TensorArgument

from ..errors import CaptureError, InputSpecError
from .inline import inline_subgraphs
from .input_sets import InputSet, normalize_inputs

__all__ = ["Capture", "capture", "normalize_inputs", "canonical_names", "aliases"]


@dataclass(frozen=True)
class Capture:
    """One traced forward of a model."""

    graph: torch.fx.Graph
    params: Mapping[str, str]  # placeholder node name -> canonical parameter FQN
    buffers: Mapping[str, str]  # placeholder node name -> buffer FQN
    constants: frozenset[str]  # placeholder nodes holding lifted tensor constants
    user_inputs: tuple[str, ...]
    user_outputs: tuple[str, ...]

    def nodes(self) -> list[torch.fx.Node]:
        return list(self.graph.nodes)


def _model_device(model: nn.Module) -> torch.device | None:
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return None


def _to_device(value: Any, device: torch.device | None) -> Any:
    if device is None:
        return value
    if isinstance(value, torch.Tensor):
        if value.device == device:
            return value
        if value.is_meta:  # meta inputs for a real model (e.g. its base): shapes are enough
            return torch.zeros(value.shape, dtype=value.dtype, device=device)
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


# loggers that print while export fails: shape warnings, "failed while attempting to run meta"
_NOISY = ("torch.fx.experimental.symbolic_shapes", "torch._subclasses.fake_tensor")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep torch.export's graph dumps and shape warnings off the user's terminal.

    On failure the CaptureError says what matters (module, file:line, fix) and chains the
    original exception, which carries torch's full explanation.
    """
    loggers = [logging.getLogger(name) for name in _NOISY]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def canonical_names(model: nn.Module) -> dict[str, str]:
    """Every alias of every parameter -> the name ``named_parameters()`` reports."""
    by_id: dict[int, str] = {id(p): name for name, p in model.named_parameters()}
    return {
        alias: by_id[id(p)]
        for alias, p in model.named_parameters(remove_duplicate=False)
    }


def aliases(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """Canonical parameter name -> every name it has in the module tree."""
    names: dict[str, list[str]] = {}
    for alias, name in canonical_names(model).items():
        names.setdefault(name, []).append(alias)
    return {k: tuple(v) for k, v in names.items()}


def capture(model: nn.Module, sets: Sequence[InputSet]) -> Capture:
    """Export ``model(*args, **kwargs)`` for every (args, kwargs) in ``sets`` as one graph
    (non-strict ``torch.export``): several sets run one after the other in a single program,
    so the graph holds every path they take, over the same parameters."""
    if not sets:
        raise InputSpecError("no example input set", fix="pass at least one input set")
    device = _model_device(model)
    sets = [(_to_device(args, device), _to_device(kwargs, device)) for args, kwargs in sets]
    for i, (args, kwargs) in enumerate(sets):
        _check_arguments(model, args, kwargs, i if len(sets) > 1 else None)
    try:
        with _quiet():
            program = _export(model, sets)
    except Exception as exc:  # noqa: BLE001 - re-raised as a CaptureError with context
        raise _failed_set(model, sets, exc) from exc
    sig = program.graph_signature
    inline_subgraphs(program.graph_module)
    canonical = canonical_names(model)
    params = {node: canonical.get(fqn, fqn) for node, fqn in sig.inputs_to_parameters.items()}
    constants = frozenset(sig.inputs_to_lifted_tensor_constants)
    return Capture(
        graph=program.graph,
        params=MappingProxyType(params),
        buffers=MappingProxyType(dict(sig.inputs_to_buffers)),
        constants=constants,
        user_inputs=tuple(sig.user_inputs),
        user_outputs=_user_outputs(program.graph, sig),
    )


def _export(model: nn.Module, sets: Sequence[InputSet]) -> torch.export.ExportedProgram:
    if len(sets) == 1:
        args, kwargs = sets[0]
        return torch.export.export(model, args, kwargs, strict=False)
    # Several sets: for the export only, the instance's forward runs the model's own forward
    # once per set and returns every output. Parameters, buffers and module paths stay the
    # model's; the instance attribute is removed (or the user's restored) afterwards.
    missing = object()
    own = model.__dict__.get("forward", missing)
    single = model.forward

    def forward(*input_sets: InputSet) -> tuple:
        return tuple(single(*args, **kwargs) for args, kwargs in input_sets)

    model.__dict__["forward"] = forward
    try:
        return torch.export.export(model, tuple(sets), {}, strict=False)
    finally:
        if own is missing:
            del model.__dict__["forward"]
        else:
            model.__dict__["forward"] = own


def _failed_set(model: nn.Module, sets: Sequence[InputSet], exc: BaseException) -> CaptureError:
    """The error of a failed export; with several sets, of the first set that fails alone."""
    if len(sets) > 1:
        for i, one in enumerate(sets):
            try:
                with _quiet():
                    _export(model, [one])
            except Exception as alone:  # noqa: BLE001 - this set is the one to report
                error = _capture_error(model, alone)
                return CaptureError(f"input set {i}: {error.message}", where=error.where,
                                    fix=error.fix)
    return _capture_error(model, exc)


def _user_outputs(graph: torch.fx.Graph, sig: ExportGraphSignature) -> tuple[str, ...]:
    """Names of the nodes the forward returns (tensors, not constants), read from the output
    node: inlining a wrapper (a checkpointed readout) replaces the node the signature names."""
    returned = graph.output_node().args[0]
    returned = returned if isinstance(returned, (list, tuple)) else (returned,)
    return tuple(node.name for spec, node in zip(sig.output_specs, returned)
                 if spec.kind == OutputKind.USER_OUTPUT and isinstance(spec.arg, TensorArgument)
                 and isinstance(node, torch.fx.Node))


def _check_arguments(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                     index: int | None) -> None:
    """Refuse example inputs that do not fit ``forward``'s signature, before export tries."""
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return  # a builtin or C forward: let export say what it finds
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise InputSpecError(
            f"the example inputs{'' if index is None else f' (set {index})'} do not fit "
            f"{type(model).__name__}.forward{signature}: {exc}",
            where=_definition(model),
            fix="pass one value per argument of forward: a tensor, a tuple (x, t, ...), or "
                "((args...), {kwargs}); a list is taken as the positional arguments") from None


_STDLIB = tuple({sysconfig.get_paths()[k] + os.sep for k in ("stdlib", "platstdlib")})


def _is_user_file(filename: str) -> bool:
    """Not torch, not this package, not the standard library (``inspect`` binding args)."""
    if "/torch/" in filename or "/muprewrite/" in filename or "<" in filename:
        return False
    packages = "site-packages" in filename or "dist-packages" in filename
    return packages or not filename.startswith(_STDLIB)


def _user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The innermost traceback frame of the user's code."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if _is_user_file(f.filename)]
    return user[-1] if user else None


def _definition(model: nn.Module) -> str:
    code = getattr(model.forward, "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code else ""


def _module_of_frame(model: nn.Module, exc: BaseException) -> str:
    """Name of the innermost module whose ``forward`` is on the failing stack."""
    names = {id(m): n for n, m in model.named_modules()}
    found = ""
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names:
            found = names[id(owner)] or "<root>"
            found = f"{found} ({type(owner).__name__})"
        tb = tb.tb_next
    return found


_VALUES = ("the forward turns tensor values into Python values (.item(), .tolist(), int(t), "
           "bool(t), `if t.any():`), which torch.export cannot capture on any device (a real "
           "CPU instance fails the same way): compute it with tensor ops instead (torch.where, "
           "masks, index_add_ on a possibly empty selection) or pass the value as a concrete "
           "Python kwarg")
_SIZES = ("the forward branches on a data-dependent size (nonzero, boolean-mask indexing, "
          "torch.where(mask)): drop the branch (ops on an empty selection are fine), or test "
          "the size with torch.fx.experimental.symbolic_shapes.guard_or_false(n == 0), "
          "which is the plain test in eager and takes the general path when captured")
_INPUTS = ("pass tensors as example inputs (torch.tensor(...) for data); Python lists, numbers "
           "and None are taken as constants")
_DTYPES = ("check the example inputs' dtypes against the model (token ids as torch.long, "
           "images as float): --inputs / example_inputs()")
_SHAPES = ("check the example inputs' shapes against the model (--inputs / example_inputs()); "
           "if they are right, run model(*inputs) in eager: the forward fails there too")
_META = ("an op has no meta-device kernel; build the model on CPU at a small width and pass "
         "base= for width evidence")
_FLEX = ("flex_attention is captured only on a GPU, and muprewrite cannot scale its logits "
         "anyway: compute the attention with F.scaled_dot_product_attention (the block mask as "
         "attn_mask) for the muP model, or keep d_head fixed and grow the number of heads")
_DEFAULT = ("make the forward traceable: no Python control flow on tensor values, timesteps "
            "as tensors, non-tensor options as concrete kwargs")
_SHAPE_WORDS = re.compile(r"size|shape|dimension|channels|broadcast|reduction dim", re.I)


def _data_dependent(exc: BaseException, text: str) -> str | None:
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

    if not isinstance(exc, GuardOnDataDependentSymNode) and "data-dependent" not in text:
        return None
    size_branch = "Could not guard" in text and "Size-like symbols: none" not in text
    return _SIZES if size_branch else _VALUES


def _fix_for(exc: BaseException) -> str:
    """The fix for a failed export, by what kind of failure it is."""
    text = str(exc)
    hint = _data_dependent(exc, text)
    if hint:
        return hint
    if "FlexAttention" in text or "flex_attention" in text:
        return _FLEX
    if "'Meta' backend" in text or (isinstance(exc, NotImplementedError) and "meta" in text):
        return _META
    if isinstance(exc, TypeError) and "must be Tensor, not" in text:
        return _INPUTS
    if "scalar type" in text or "dtype" in text:
        return _DTYPES
    if isinstance(exc, (RuntimeError, ValueError, IndexError)) and _SHAPE_WORDS.search(text):
        return _SHAPES
    return _DEFAULT


def _capture_error(model: nn.Module, exc: BaseException) -> CaptureError:
    frame = _user_frame(exc)
    where = f"{frame.filename}:{frame.lineno}: {frame.line}" if frame else ""
    module = _module_of_frame(model, exc)
    if module:
        where = f"module {module}" + (f", {where}" if where else "")
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return CaptureError(
        f"could not capture {type(model).__name__}.forward with torch.export: "
        f"{type(exc).__name__}: {first}",
        where=where,
        fix=_fix_for(exc),
    )
