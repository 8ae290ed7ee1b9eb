"""Scaled dot-product attention: ``q[..., L, E] k[..., S, E] v[..., S, Ev] -> out[..., L, Ev]``."""

from __future__ import annotations

from torch import fx

from ..registry import Ctx, rule

__all__: list[str] = []


@rule("scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
      "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention_for_cpu",
      "_scaled_dot_product_cudnn_attention")
def sdpa(node: fx.Node, ctx: Ctx) -> None:
    q, k, v = (ctx.axes(a) for a in node.args[:3])
    assert q is not None and k is not None and v is not None
    out = ctx.out(node) if ctx.is_tensor(node) else ctx.out(node, 0)
    sq, sk, sv = (ctx.shape(a) for a in node.args[:3])
    ctx.same_all(q[:-1], out[:-1])
    ctx.graph.same(v[-1], out[-1])
    ctx.graph.same(q[-1], k[-1])
    ctx.graph.same(k[-2], v[-2])
    for other, shape in ((k, sk), (v, sv)):  # batch and head axes, when sizes agree (GQA may not)
        for i in range(3, min(len(q), len(other)) + 1):
            if shape[-i] == sq[-i]:
                ctx.graph.same(other[-i], q[-i])
    mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
    if ctx.is_tensor(mask):
        logits = q[:-1] + [k[-2]]
        ctx.broadcast(mask, logits, tuple(sq[:-1]) + (sk[-2],))
