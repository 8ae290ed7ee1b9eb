"""Stage 6a, by pattern: every attention computation in the methods of an attention host.

For one captured attention (d_head grows, so the logits take a factor) this scan visits every
method of the classes of the attention module's MRO written in the file (all but
``__init__``) and the file's top-level functions they call, and finds:

- each ``scaled_dot_product_attention`` call (``F.``, ``torch.nn.functional.`` or bare);
- each call of an external kernel whose scale argument it can set (``SCALE_KEYWORDS``:
  xformers' ``memory_efficient_attention(q, k, v, ..., scale=)``, flash-attn's
  ``flash_attn_func(q, k, v, ..., softmax_scale=)``), d_head on the query's last axis as in
  SDPA; the other kernels of ``EXTERNAL_ATTENTION`` are refused (``apply`` refuses them only
  where they are reached, so a model that never takes that path still runs at runtime);
- each softmax (``x.softmax(-1)``, ``F.softmax(x, -1)``, ``torch.softmax``, an ``nn.Softmax``
  attribute called) and, by following the names it reads back through their assignments
  (``attn = q @ k.transpose(-2, -1)``; ``attn = attn.masked_fill(...)``), the q.k^T product it
  is taken over (``@``, ``torch.matmul``, ``torch.bmm``, ``torch.einsum``, ``q.matmul(k)``).

A softmax over no such product, or over two products added together, is refused with its line:
the emitter cannot tell which part is q.k^T.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import libcst as cst

from ...rewrite.external import EXTERNAL_ATTENTION, SCALE_KEYWORDS
from ..cst.source import SourceFile, callee_name, chain, root_name
from ..cst.trace import Ambiguous, Trace, query_of
from .scan import Found, Refusal, Scan

__all__ = ["scan_attention", "attention_functions"]

_QUERY = (cst.Name, cst.Attribute, cst.Subscript)


class _NoInput:
    """A softmax call whose input the scan cannot find (passed by ``*args``)."""


NO_INPUT = _NoInput()


def attention_functions(src: SourceFile, scope: Sequence[str],
                        extra: Sequence[cst.FunctionDef] = ()) -> list[cst.FunctionDef]:
    """The methods of ``scope``, ``extra`` functions, and the top-level functions they call."""
    functions = [*src.methods(scope), *(f for f in extra if f not in src.methods(scope))]
    return functions + [f for f in src.reach(functions, scope) if f not in functions]


def scan_attention(src: SourceFile, functions: Sequence[cst.FunctionDef],
                   children: Mapping[str, str]) -> Scan:
    """``children``: ``self.<name>`` -> "softmax" (an nn.Softmax) or "mha" (an
    nn.MultiheadAttention, whose attention torch computes)."""
    scan = Scan()
    for function in functions:
        trace, before = Trace(src, function), len(scan.found)
        for node in src.nodes(function, cst.Call, cst.Name):
            if isinstance(node, cst.Name):
                _sdpa_reference(src, node, scan)
                continue
            assert isinstance(node, cst.Call)
            if callee_name(node.func) == "scaled_dot_product_attention":
                _sdpa(src, node, scan)
            elif callee_name(node.func) in EXTERNAL_ATTENTION and chain(node.func) is None:
                _external(src, node, scan)
            elif children.get(chain(node.func) or "") == "mha":
                scan.refusals.append(Refusal(node, f"self.{chain(node.func)} is an "
                                             "nn.MultiheadAttention: torch computes its "
                                             "attention, so its logits cannot be scaled here"))
            elif (logits := _softmax_input(src, node, children)) is not None:
                _softmax(src, trace, node, logits, scan)
        if len(scan.found) > before:
            _shared(src, function, functions, scan)
    return scan


def _sdpa_reference(src: SourceFile, name: cst.Name, scan: Scan) -> None:
    """``fn = F.scaled_dot_product_attention``: a call the scan cannot follow."""
    if name.value != "scaled_dot_product_attention":
        return
    node: cst.CSTNode = name
    parent = src.parents[node]
    if isinstance(parent, cst.Attribute) and parent.attr is name:
        node, parent = parent, src.parents[parent]
    if isinstance(parent, cst.Call) and parent.func is node:
        return
    scan.refusals.append(Refusal(node, "scaled_dot_product_attention is used here other than "
                                 "by a call, so the call that takes the scale cannot be found",
                                 fix="call F.scaled_dot_product_attention(q, k, v) directly, or "
                                     "use muprewrite.apply(model, ...) at runtime"))


def _sdpa(src: SourceFile, call: cst.Call, scan: Scan) -> None:
    query = call.args[0].value if call.args and not call.args[0].keyword else next(
        (a.value for a in call.args if a.keyword and a.keyword.value == "query"), None)
    if not isinstance(query, _QUERY):
        scan.refusals.append(Refusal(call, "the query of scaled_dot_product_attention is not "
                                     "a plain name, so its head size cannot be read",
                                     fix="assign the query to a variable first: q = ...; "
                                         "F.scaled_dot_product_attention(q, k, v)"))
    elif sum(1 for a in call.args if not a.keyword) > 6:
        scan.refusals.append(Refusal(call, "scale is passed positionally",
                                     fix="pass it as scale=..."))
    else:
        scan.found.append(Found(call, "sdpa", "scaled_dot_product_attention(...)",
                                query=src.code(query)))


def _external(src: SourceFile, call: cst.Call, scan: Scan) -> None:
    """A flash-attn / xformers call: its scale keyword set like SDPA's (forms.py)."""
    name = callee_name(call.func)
    library = EXTERNAL_ATTENTION[name]
    if name not in SCALE_KEYWORDS:
        scan.refusals.append(Refusal(call, f"{name} ({library}) computes attention here, and "
                                     "the emitter does not set its softmax scale",
                                     fix="call F.scaled_dot_product_attention (or "
                                         "memory_efficient_attention / flash_attn_func) there, "
                                         "or use muprewrite.apply(model, ...) at runtime"))
        return
    keyword, at = SCALE_KEYWORDS[name]
    query = call.args[0].value if call.args and not call.args[0].keyword else None
    if not isinstance(query, _QUERY):
        scan.refusals.append(Refusal(call, f"the query of {name} is not a plain name passed "
                                     "first, so its head size cannot be read",
                                     fix=f"assign the query to a variable first: q = ...; "
                                         f"{name}(q, k, v)"))
    elif sum(1 for a in call.args if not a.keyword) > at:
        scan.refusals.append(Refusal(call, f"{name} is given more positional arguments than "
                                     f"q, k, v and the ones before its {keyword}",
                                     fix=f"pass the arguments after v by keyword "
                                         f"({keyword}=...)"))
    else:
        scan.found.append(Found(call, "sdpa", f"{name}(...) ({library})",
                                query=src.code(query)))


def _softmax_input(src: SourceFile, call: cst.Call, children: Mapping[str, str]
                   ) -> cst.BaseExpression | _NoInput | None:
    """The tensor a softmax ``call`` is taken over; None: not a softmax."""
    args = [a for a in call.args if not a.keyword and not a.star]
    first: cst.BaseExpression | _NoInput = args[0].value if args else next(
        (a.value for a in call.args if a.keyword and a.keyword.value == "input"), NO_INPUT)
    if chain(call.func) is not None:  # self.softmax(x), an nn.Softmax
        return first if children.get(chain(call.func) or "") == "softmax" else None
    if isinstance(call.func, cst.Name) and call.func.value == "softmax":
        return first
    if isinstance(call.func, cst.Attribute) and call.func.attr.value == "softmax":
        if root_name(call.func.value) in src.imported:  # F.softmax(x), torch.softmax(x)
            return first
        return call.func.value  # x.softmax(-1)
    return None


def _softmax(src: SourceFile, trace: Trace, call: cst.Call,
             logits: cst.BaseExpression | _NoInput, scan: Scan) -> None:
    trace.sampled = False
    try:
        products = trace.products(logits) if not isinstance(logits, _NoInput) else []
    except Ambiguous as exc:
        lines = ", ".join(str(n) for n in sorted({src.line(p) for p in exc.products}))
        scan.refusals.append(Refusal(call, f"the softmax here is taken over several matrix "
                                     f"products added together (line(s) {lines}); the emitter "
                                     "cannot tell which one is q.k^T",
                                     fix="compute q @ k.transpose(-2, -1) on its own line, or "
                                         "use muprewrite.apply(model, ...) at runtime"))
        return
    if not products and trace.sampled:
        return  # over the model's own output (sampling in generate()): not attention
    if not products:
        scan.refusals.append(Refusal(call, "softmax over something the emitter does not "
                                     "recognise as a q.k^T product, in a module whose "
                                     "attention logits take a muP factor",
                                     fix="write the logits as q @ k.transpose(-2, -1) (or "
                                         "torch.matmul / torch.einsum) in this function, or use "
                                         "muprewrite.apply(model, ...) at runtime"))
    for product in products:
        query = query_of(src, product)
        if not isinstance(query, _QUERY):
            scan.refusals.append(Refusal(product, "the query of q.k^T is not a plain name, so "
                                         "its head size cannot be read",
                                         fix="assign the query to a variable first: q = ...; "
                                             "q @ k.transpose(-2, -1)"))
        else:
            scan.found.append(Found(product, "logits", "q.k^T product before a softmax",
                                    query=src.code(query), axis=_head_axis(product)))


def _head_axis(product: cst.CSTNode) -> int | None:
    """The axis of the query that ``product`` contracts, counted from the end: -1 for a matmul
    (``q @ k.transpose(-2, -1)``); for ``torch.einsum(eq, q, k)`` the position of the one index
    q and k share that the output drops (-2 in ``"bhdn,bhdm->bhnm"``). None where the source
    does not show it: an equation that is not a string literal, or the index before ``...``."""
    if not isinstance(product, cst.Call) or callee_name(product.func) != "einsum":
        return -1
    args = [a.value for a in product.args if not a.keyword]
    if not args or not isinstance(args[0], cst.SimpleString):
        return None
    equation = args[0].evaluated_value
    inputs, arrow, output = (equation.decode() if isinstance(equation, bytes) else equation
                             ).replace(" ", "").partition("->")
    terms = inputs.split(",")
    if len(terms) != 2:
        return None
    if not arrow:  # implicit output: the indices that occur once
        output = "".join(c for c in inputs if inputs.count(c) == 1)
    q, k = terms
    summed = [i for i, c in enumerate(q) if c.isalpha() and c in k and c not in output]
    tail = q.partition("...")[2] if "..." in q else q
    if len(summed) != 1 or summed[0] < len(q) - len(tail):
        return None
    return summed[0] - len(q)


def _shared(src: SourceFile, function: cst.FunctionDef, functions: Sequence[cst.FunctionDef],
            scan: Scan) -> None:
    """A top-level function with attention, called from outside the attention's classes:
    editing it would change modules the plan does not cover."""
    name = function.name.value
    if src.functions.get(name) is not function:
        return
    for node in src.nodes_named(name):
        if src.parents[node] is function or any(src.inside(node, f) for f in functions):
            continue
        scan.refusals.append(Refusal(node, f"{name}() holds attention that takes a muP factor "
                                     "and is also used outside the modules it was captured "
                                     "in", fix=f"give those modules their own copy of {name}(), "
                                               "or use muprewrite.apply(model, ...) at runtime"))
        return
