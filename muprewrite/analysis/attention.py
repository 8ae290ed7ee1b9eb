"""Find attention sites: SDPA calls and explicit ``softmax(q @ k^T * scale) @ v``.

A site names the axes that matter for muP: the d_head axis that ``q . k`` contracts, read
off the op (an einsum's summed index, wherever it sits: ADM's ``bct,bcs->bts`` keeps it
before the sequence; a matmul's left operand's last axis), and the heads axis, when the
tensors carry one. ``heads_marks`` turns the
heads convention into evidence for the dimension solver: with ``heads="grow"`` the number
of heads grows and d_head is fixed; with ``heads="fixed"`` d_head grows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import fx

from ..dims import Axis, Mark
from ..dims.registry import Ctx, op_name
from ..dims.rules.contract import einsum_letters

__all__ = ["AttentionPattern", "find_attention", "heads_marks", "HeadsConvention",
           "refuse_unplanned_attention", "attention_host",
           "SDPA_OPS", "SOFTMAX_OPS", "MATMUL_OPS"]

HeadsConvention = Literal["grow", "fixed"]

SDPA_OPS = frozenset({"scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
                      "_scaled_dot_product_efficient_attention",
                      "_scaled_dot_product_flash_attention_for_cpu",
                      "_scaled_dot_product_cudnn_attention"})
SOFTMAX_OPS = frozenset({"softmax", "_softmax", "_safe_softmax"})
# ops between q.k^T and softmax (scale, mask, bias, cap, a reshape to add a mask through)
_PASS = {"div", "mul", "add", "sub", "masked_fill", "where", "_to_copy", "to", "clone",
         "contiguous", "type_as", "tanh", "view", "reshape", "_unsafe_view"}
_DEPTH = 12  # ops followed back from a softmax
MATMUL_OPS = frozenset({"matmul", "bmm", "einsum", "baddbmm"})


@dataclass(frozen=True)
class AttentionPattern:
    node: str
    kind: str  # "sdpa" | "softmax"
    q: Axis  # d_head axis of q (contracted with k)
    v: Axis | None  # d_head axis of v
    heads: tuple[Axis, ...]  # heads axes of q, k, v (empty when tensors carry none)
    scale: float | None  # explicit scale (SDPA scale=, or a constant mul/div found)
    scale_node: str | None  # the node applying an explicit scale
    path: tuple[str, ...] = ()  # ops between q.k^T and softmax (softmax sites)
    logits: str | None = None  # the q.k^T node (softmax sites)


def find_attention(graph: fx.Graph) -> list[AttentionPattern]:
    found = []
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        name = op_name(node)
        if name in SDPA_OPS:
            found.append(_sdpa(node))
        elif name in SOFTMAX_OPS:
            site = _softmax(node)
            if site is not None:
                found.append(site)
    return found


# attention kernels whose logits no edit of this tool reaches: a model using them is refused,
# never rewritten with those logits left at their standard-parametrization scale
UNPLANNED_OPS = frozenset({"flex_attention", "flex_attention_backward"})


def refuse_unplanned_attention(graph: fx.Graph, grows: Callable[[Axis], bool]) -> None:
    """Raise at the first attention kernel the rewrite cannot scale (``flex_attention``)
    whose query's head size grows with width (``grows``: the solved dimensions)."""
    from ..errors import CaptureError

    for node in graph.nodes:
        if node.op != "call_function" or op_name(node) not in UNPLANNED_OPS:
            continue
        q = node.args[0] if node.args else None
        if not isinstance(q, fx.Node) or grows((q.name, q.meta["val"].dim() - 1)):
            raise CaptureError(
                f"{op_name(node)} computes attention here, and muprewrite cannot scale its "
                "logits (its score function runs inside a compiled kernel)",
                where=_kernel_where(node, q),
                fix="compute this attention with F.scaled_dot_product_attention (the block "
                    "mask as attn_mask) for the muP model, or keep d_head fixed and grow the "
                    "number of heads")


def _kernel_where(node: fx.Node, q: object) -> str:
    """A kernel's own trace is its compiled wrapper's: name the module and the query's line."""
    from ..capture.source import node_module, node_source

    module = node_module(node) or "<root>"
    src = None
    for _ in range(8):  # up from the query to the first node with a line of the user's
        if not isinstance(q, fx.Node) or (src := node_source(q)) is not None:
            break
        q = q.args[0] if q.args else None
    return f"module {module}, the call taking the query computed at {src}" if src else \
        f"module {module}"


def attention_host(*nodes: fx.Node | None) -> tuple[str, str]:
    """(path, ``nn_module_stack`` key) of the innermost module whose forward runs all of
    ``nodes`` (a site's softmax and its q.k^T product): an ``nn.Softmax`` child
    (vit-pytorch's ``self.attend``) computes the softmax of logits its parent computed, so
    the parent is the module whose forward holds the attention ('' = the root)."""
    stacks = [list((n.meta.get("nn_module_stack") or {}).items()) for n in nodes
              if n is not None]
    common: list[tuple[str, tuple[str, object]]] = []
    for items in zip(*stacks):
        if any(item[0] != items[0][0] for item in items):
            break
        common.append(items[0])
    if not common:
        return "", ""
    key, (path, _cls) = common[-1]
    return str(path), str(key)


def _sdpa(node: fx.Node) -> AttentionPattern:
    q, k, v = node.args[:3]
    nq, nk, nv = (a.meta["val"].dim() for a in (q, k, v))
    heads = tuple((t.name, n - 3) for t, n in ((q, nq), (k, nk), (v, nv)) if n >= 4)
    scale = node.kwargs.get("scale")
    if scale is None and len(node.args) > 6:
        scale = node.args[6]
    return AttentionPattern(node.name, "sdpa", (q.name, nq - 1), (v.name, nv - 1), heads,
                            float(scale) if scale is not None else None,
                            node.name if scale is not None else None)


def _softmax(node: fx.Node) -> AttentionPattern | None:
    found = _logits_of(node.args[0], _DEPTH, set())
    if found is None:
        return None
    product, path = found
    scale: float | None = None
    scale_node: str | None = None
    for op in path:  # from the softmax back: the scale nearest the product wins
        name = op_name(op)
        if name in ("mul", "div") and isinstance(op.args[1], (int, float)):
            value = float(op.args[1])
            scale, scale_node = (value if name == "mul" else 1.0 / value), op.name
    found_q = _einsum_query(product) if op_name(product) == "einsum" else _matmul_query(product)
    if found_q is None:
        return None
    q_axis, heads = found_q
    return AttentionPattern(node.name, "softmax", q_axis, _value_axis(node), heads,
                            scale, scale_node, tuple(op_name(op) for op in path), product.name)


def _logits_of(cur: object, budget: int, seen: set[fx.Node]
               ) -> tuple[fx.Node, list[fx.Node]] | None:
    """The q.k^T product a softmax input is computed from, and the ops between them (from
    the softmax back), through scales, masks, biases and reshapes: Swin adds its window mask
    to the logits viewed as (B/nW, nW, heads, N, N) and views them back. Of an op with
    several tensor operands (a mask added, ``torch.where``), the one leading to a product."""
    if budget <= 0 or not isinstance(cur, fx.Node) or cur.op != "call_function" or cur in seen:
        return None
    seen.add(cur)
    name = op_name(cur)
    if name in MATMUL_OPS:
        return cur, []
    if name not in _PASS:
        return None
    for arg in cur.args:
        if Ctx.is_tensor(arg):
            found = _logits_of(arg, budget - 1, seen)
            if found is not None:
                return found[0], [cur, *found[1]]
    return None


def _matmul_query(product: fx.Node) -> tuple[Axis, tuple[Axis, ...]] | None:
    """q's contracted axis in ``q @ k^T`` (its last: k comes transposed) and its heads axis
    (``q[..., H, L, E]``), if it has one."""
    q = product.args[1 if op_name(product) == "baddbmm" else 0]
    if not isinstance(q, fx.Node):
        return None
    name, nq = str(q.name), int(q.meta["val"].dim())
    if nq < 2:
        return None
    return (name, nq - 1), ((name, nq - 3),) if nq >= 4 else ()


def _einsum_query(product: fx.Node) -> tuple[Axis, tuple[Axis, ...]] | None:
    """q's contracted axis in ``einsum(eq, q, k)``, wherever the equation puts it
    (``bhid,bhjd->bhij``; ADM's ``bct,bcs->bts``, head size before sequence), and its heads
    axis: the last of the axes q and k share with the output, if there are two or more."""
    operands = [a for a in product.args[1] if Ctx.is_tensor(a)]
    if len(operands) != 2 or not isinstance(product.args[0], str):
        return None
    (q, k), out = einsum_letters(product.args[0], [t.meta["val"].dim() for t in operands])
    summed = [i for i, c in enumerate(q) if c in k and c not in out]
    if len(summed) != 1:
        return None
    batch = [i for i, c in enumerate(q) if c in k and c in out]
    name = str(operands[0].name)
    return (name, summed[0]), ((name, batch[-1]),) if len(batch) >= 2 else ()


def _value_axis(softmax: fx.Node) -> Axis | None:
    """The d_head axis of v in ``softmax(...) @ v`` (through dropout / casts)."""
    frontier = [softmax]
    for _ in range(4):
        nxt = []
        for src in frontier:
            for user in src.users:
                name = op_name(user)
                if name in ("matmul", "bmm") and user.args[0] is src and Ctx.is_tensor(user.args[1]):
                    v = user.args[1]
                    return (str(v.name), int(v.meta["val"].dim()) - 1)
                if name == "einsum":
                    return _einsum_value(user, src)
                if name in ("dropout", "native_dropout", "_to_copy", "to", "type_as",
                            "getitem", "clone", "contiguous"):
                    nxt.append(user)
        frontier = nxt
    return None


def _einsum_value(product: fx.Node, probs: fx.Node) -> Axis | None:
    """v's head-size axis in ``einsum(eq, probs, v)`` (``bts,bcs->bct``): the one axis of
    v that the output keeps and the probabilities do not have."""
    operands = [a for a in product.args[1] if Ctx.is_tensor(a)]
    if len(operands) != 2 or probs not in operands or not isinstance(product.args[0], str):
        return None
    labels, out = einsum_letters(product.args[0], [t.meta["val"].dim() for t in operands])
    i = operands.index(probs)
    v, p = operands[1 - i], labels[i]
    kept = [d for d, c in enumerate(labels[1 - i]) if c in out and c not in p]
    return (str(v.name), kept[0]) if len(kept) == 1 else None


def heads_marks(sites: list[AttentionPattern], heads: HeadsConvention) -> list[Mark]:
    """Evidence from the heads convention at every site that has a heads axis."""
    marks = []
    for site in sites:
        if not site.heads:
            marks.append(Mark(site.q, True, "attention width (single head)", site.node))
            continue
        grow = heads == "grow"
        why = f"heads convention '{heads}' at attention {site.node}"
        for axis in site.heads:
            marks.append(Mark(axis, grow, why, site.node))
        marks.append(Mark(site.q, not grow, why, site.node))
        if site.v is not None:
            marks.append(Mark(site.v, not grow, why, site.node))
    return marks
