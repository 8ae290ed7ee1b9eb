"""Stage 6a, by pattern: every use of a multiplied parameter in its host's methods.

A capture sees one path through ``forward``; the methods of the host class hold all of them.
For one captured readout (a parameter with a forward multiplier, read in a host class) this
scan visits every method of the classes of the host's MRO written in one file (all but
``__init__``) and sorts each mention of the readout module or of its parameter:

- ``self.<module>(x)``: edited (its input times the multiplier; a lookup's output);
- ``F.linear(x, self.<weight>)`` and the other linear functionals, ``x @ self.<weight>.t()``:
  edited (the input, or the product);
- ``self.mlp(x)`` where the readout is ``self.mlp[0]`` of an nn.Sequential: its input scaled;
- reading a shape or dtype, an in-place init (``nn.init.zeros_(self.head.weight)``), an
  assignment to it, ``isinstance``/``hasattr``, a comparison, a tied weight's embedding
  lookup: left alone (a tied weight's lookups take their own site when the file has base
  hyperparameters: its input multiplier; that site leaves the readouts alone);
- anything else (the module returned, passed on or aliased, ``getattr(self, name)``, the weight
  in an expression this scan does not know to be linear): refused, with the line.
"""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst

from ..cst.source import SourceFile, callee_name, chain
from .scan import Found, Refusal, Scan
from .sites import ReadoutSite

__all__ = ["scan_readout"]

_TRANSPARENT_ATTRS = frozenset({"T", "mT", "H", "mH", "data"})
_TRANSPARENT_METHODS = frozenset({"t", "transpose", "permute", "to", "type_as", "float",
                                  "half", "bfloat16", "double", "contiguous"})
_META_ATTRS = frozenset({"shape", "dtype", "device", "ndim", "requires_grad", "is_meta",
                         "is_cuda", "layout", "grad", "is_leaf"})
_META_METHODS = frozenset({"size", "dim", "numel", "nelement", "stride", "data_ptr",
                           "element_size", "is_contiguous"})
_LINEAR = frozenset({"linear", "conv1d", "conv2d", "conv3d", "matmul", "mm", "bmm", "einsum",
                     "embedding"})
_INSPECT = frozenset({"isinstance", "hasattr", "type", "id"})


def scan_readout(src: SourceFile, site: ReadoutSite, classes: Sequence[str]) -> Scan:
    """Every use of ``site``'s parameter in the methods of ``classes`` (those of the site's
    scope that ``src`` defines)."""
    calls = {owner: kind for owner, kind in site.owners}
    if site.callee:
        calls[site.callee] = "input" if site.scale_input else "output"
    weights = set(site.weights) | ({site.param_attr} if site.param_attr else set())
    roots = {name.split(".")[0] for name in (*calls, *weights)}
    holders = {owner.rsplit(".", i)[0] for owner in calls for i in range(1, owner.count(".") + 1)}
    scan = Scan()
    for function in src.methods(classes):
        for node in src.nodes(function, cst.Attribute, cst.Call):
            if isinstance(node, cst.Call):
                _dynamic(src, node, roots, scan)
                continue
            name = chain(node)
            if name in calls:
                _module_use(src, node, name, calls[name], scan)
            elif name in weights:
                _weight_use(src, node, name, site.tied, scan, site.lookup)
            elif name in holders - set(calls):
                _holder_use(src, node, name, name in site.fronts, scan)
    return scan


def _holder_use(src: SourceFile, node: cst.CSTNode, name: str, front: bool, scan: Scan
                ) -> None:
    """``self.head(x)`` where the readout is ``self.head[1]``: its forward is not here; where
    it is ``self.head[0]`` of an nn.Sequential (``front``), scaling the input scales its."""
    parent = src.parents[node]
    if isinstance(parent, cst.Call) and parent.func is node and front:
        scan.found.append(Found(parent, "call", f"call self.{name}(...), whose first layer is "
                                "the readout"))
    elif isinstance(parent, cst.Call) and parent.func is node:
        scan.refusals.append(Refusal(parent, f"self.{name} holds the readout and is called "
                                     "as a whole, so the readout's input cannot be scaled here",
                                     fix="call the readout module itself in this class, or "
                                         "use muprewrite.apply(model, ...) at runtime"))


def _module_use(src: SourceFile, node: cst.CSTNode, name: str, kind: str, scan: Scan) -> None:
    parent = src.parents[node]
    if isinstance(parent, cst.Call) and parent.func is node:
        if kind in ("input", "output"):
            scan.found.append(Found(parent, "call", f"readout call self.{name}(...)",
                                    kind == "input"))
        elif kind == "refuse":
            scan.refusals.append(Refusal(parent, f"self.{name} holds a parameter with a "
                                         "forward multiplier, but its forward is not written "
                                         "here, so the multiplier cannot be placed"))
        return
    if isinstance(parent, cst.Attribute) and parent.value is node:
        if parent.attr.value in ("forward", "__call__"):
            scan.refusals.append(Refusal(parent, f"self.{name}.{parent.attr.value}(...) "
                                         "bypasses the call the multiplier is placed on",
                                         fix=f"call it as self.{name}(x), or "
                                             "use muprewrite.apply(model, ...) at runtime"))
        return  # an attribute of the module: its weight is sorted on its own
    if not _harmless(src, node):
        scan.refusals.append(Refusal(node, f"self.{name} (the readout) is used other than "
                                     f"by a call self.{name}(...) (returned, passed on or "
                                     "aliased), where no output multiplier follows it",
                                     fix=f"call self.{name}(x) inside the class instead, or "
                                         "use muprewrite.apply(model, ...) at runtime"))


def _unwrap(src: SourceFile, node: cst.CSTNode) -> tuple[cst.CSTNode, bool]:
    """``self.w.t()``, ``self.w.T``: the outermost view of the weight, and whether there is one."""
    cur, wrapped = node, False
    while True:
        parent = src.parents[cur]
        if not (isinstance(parent, cst.Attribute) and parent.value is cur):
            return cur, wrapped
        attr = parent.attr.value
        grand = src.parents[parent]
        if attr in _TRANSPARENT_ATTRS:
            cur, wrapped = parent, True
        elif attr in _TRANSPARENT_METHODS and isinstance(grand, cst.Call) and grand.func is parent:
            cur, wrapped = grand, True
        else:
            return cur, wrapped


def _weight_use(src: SourceFile, node: cst.CSTNode, name: str, tied: bool, scan: Scan,
                lookup: bool = False) -> None:
    """``lookup``: the site of a tied weight's embedding lookups, which leaves its readouts
    (every other linear use) to the readout's site; a tied weight's readout site leaves the
    lookups."""
    cur, wrapped = _unwrap(src, node)
    parent = src.parents[cur]
    if isinstance(parent, cst.BinaryOperation) and isinstance(parent.operator,
                                                               cst.MatrixMultiply):
        if not lookup:
            scan.found.append(Found(parent, "matmul", f"product with self.{name}"))
        return
    if isinstance(parent, cst.Arg) and parent.value is cur:
        call = src.parents[parent]
        assert isinstance(call, cst.Call)
        fn = callee_name(call.func)
        gather = fn == "embedding" and not wrapped
        if _in_place(fn) or fn in _INSPECT or (gather and tied and not lookup) or (
                lookup and fn in _LINEAR and fn != "embedding"):
            return
        if fn in _LINEAR and not wrapped:
            scan.found.append(Found(call, "functional", f"{fn}(..., self.{name})"))
            return
    elif isinstance(parent, cst.Attribute) and parent.value is cur:
        attr = parent.attr.value
        grand = src.parents[parent]
        called = isinstance(grand, cst.Call) and grand.func is parent
        if attr in _META_ATTRS or called and (attr in _META_METHODS or _in_place(attr)):
            return
    elif _harmless(src, cur):
        return
    scan.refusals.append(Refusal(cur, f"self.{name} (a weight with a forward multiplier) is "
                                 "used in an expression the emitter does not know to be linear "
                                 "in it", fix=f"write the use as F.linear(x, self.{name}) or "
                                              f"x @ self.{name}.t(), or use muprewrite.apply("
                                              "model, ...) at runtime"))


def _in_place(name: str) -> bool:
    """``zeros_``, ``normal_``, ``copy_``: torch's in-place (init) functions and methods."""
    return name.endswith("_") and not name.startswith("__")


def _harmless(src: SourceFile, node: cst.CSTNode) -> bool:
    """Assigned to, compared, or handed to ``isinstance``/``hasattr``: no computation."""
    parent = src.parents[node]
    if isinstance(parent, (cst.AssignTarget, cst.Comparison, cst.ComparisonTarget)):
        return True
    if isinstance(parent, cst.Arg):
        call = src.parents[parent]
        return isinstance(call, cst.Call) and isinstance(call.func, cst.Name) and (
            call.func.value in _INSPECT)
    return False


def _dynamic(src: SourceFile, call: cst.Call, roots: set[str], scan: Scan) -> None:
    """``getattr(self, name)``: refused unless ``name`` is a literal naming something else
    (``setattr`` replaces a module, as an assignment does: left alone)."""
    if not (isinstance(call.func, cst.Name) and call.func.value == "getattr" and call.args
            and isinstance(call.args[0].value, cst.Name) and call.args[0].value.value == "self"):
        return
    name = call.args[1].value if len(call.args) > 1 else None
    if isinstance(name, cst.SimpleString) and name.evaluated_value not in roots:
        return
    scan.refusals.append(Refusal(call, "getattr(self, ...) may reach the readout "
                                 f"(self.{', self.'.join(sorted(roots))}), and no output "
                                 "multiplier follows what it returns", fix="use the attribute by name (self.<name>), "
                                                    "or use muprewrite.apply(model, ...) at "
                                                    "runtime"))
