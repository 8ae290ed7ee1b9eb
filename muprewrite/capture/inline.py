"""Splice the bodies of export's wrapper ops back into the graph they were cut from.

``torch.export`` (non-strict) puts some regions of the forward into a sub-module called
through a higher-order op:

- ``wrap_with_set_grad_enabled(enabled, body, *operands)``: code run under
  ``torch.no_grad()`` / ``set_grad_enabled`` — transformers' rotary tables, and every block
  wrapped in ``torch.utils.checkpoint.checkpoint(..., use_reentrant=True)`` (its autograd
  Function runs the block under ``no_grad``; the ops after it may land in such a region too);
- ``wrap_with_autocast(device, dtype, enabled, cache, body, *operands)``: ``autocast``;
- ``tag_activation_checkpoint(body, *operands)`` / ``wrap(body, *operands)``: what strict
  export and dynamo make of ``checkpoint(..., use_reentrant=False)`` (non-strict export runs
  that checkpoint as plain ops, so nothing is wrapped there).

The dimension analysis sees through none of them, so every body is copied into the parent
graph in place of its call (nested bodies first) and the call's ``getitem`` users are
rewired to the copies. ``checkpoint_sequential`` is a loop of ``checkpoint`` calls and needs
nothing of its own.
"""

from __future__ import annotations

import operator

from torch import fx
from torch._ops import HigherOrderOperator

__all__ = ["inline_subgraphs", "WRAPPERS"]

WRAPPERS = frozenset({"wrap_with_set_grad_enabled", "wrap_with_autocast",
                      "tag_activation_checkpoint", "wrap_activation_checkpoint", "wrap"})


def _is_wrapper(node: fx.Node) -> bool:
    """A call of one of the wrapper higher-order ops (``torch.ops.higher_order.*``)."""
    target = node.target
    return (node.op == "call_function" and isinstance(target, HigherOrderOperator)
            and target.__name__ in WRAPPERS)


def _body(gm: fx.GraphModule, node: fx.Node) -> tuple[int, fx.GraphModule] | None:
    """Position and module of the wrapped body: the first ``get_attr`` argument naming a
    GraphModule (the wrappers differ in how many flags come before it)."""
    for i, arg in enumerate(node.args):
        if isinstance(arg, fx.Node) and arg.op == "get_attr":
            sub = getattr(gm, str(arg.target), None)
            if isinstance(sub, fx.GraphModule):
                return i, sub
    return None


def inline_subgraphs(gm: fx.GraphModule) -> bool:
    """Inline every wrapper call of ``gm`` (recursively); return whether anything changed."""
    changed = False
    for node in list(gm.graph.nodes):
        if not _is_wrapper(node):
            continue
        found = _body(gm, node)
        if found is None:
            continue
        index, sub = found
        inline_subgraphs(sub)
        _splice(gm.graph, node, index, sub)
        changed = True
    return changed


def _splice(graph: fx.Graph, node: fx.Node, index: int, sub: fx.GraphModule) -> None:
    """Copy body ``sub`` (argument ``index`` of ``node``) before ``node``, feed it the
    arguments after it, and rewire ``node``'s users to the copy."""
    body_attr, operands = node.args[index], node.args[index + 1:]
    holders = [n for n in sub.graph.nodes if n.op == "placeholder"]
    with graph.inserting_before(node):
        result = graph.graph_copy(sub.graph, dict(zip(holders, operands)))  # type: ignore[arg-type]
    if isinstance(result, (list, tuple)):
        for user in list(node.users):
            if user.target is operator.getitem:
                user.replace_all_uses_with(result[user.args[1]])  # type: ignore[index]
                graph.erase_node(user)
    elif isinstance(result, fx.Node):
        node.replace_all_uses_with(result)
    if not node.users:
        graph.erase_node(node)
        if isinstance(body_attr, fx.Node) and not body_attr.users:
            graph.erase_node(body_attr)

