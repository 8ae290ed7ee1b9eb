"""Stage 6a — where the source changes go: from the plan to lines and calls in the user's files.

A readout multiplier is placed on the call that feeds the weight (``self.linear(x)``), in the
method of the module instance ("host") whose class is written in the user's project and holds
that line. An attention scale is placed on the ``scaled_dot_product_attention`` call at the
attention site's line. Either may lie in any file of the project (``project.py``: the model
file's folder, or the folder above its top package); a change that would fall outside it (an
installed library) is an error naming the place: the emitter never writes a silently
incomplete model.

Each site also carries what the pattern scans (``readouts.py``, ``attention.py``) need to
find the same computation on paths no capture ran: the classes of the host's MRO written in
the project (``scope``, with their files), and for a readout every name of its parameter and
the kind of module that owns it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from ...analysis.uses import Use
from ...rewrite.plan import Plan, multiplied_uses
from ..errors import EmitError
from .places import place, scope_of
from .sites import AttentionScaleSite, ReadoutSite, Sites

if TYPE_CHECKING:
    from .project import Project

__all__ = ["locate"]

_ATTRIBUTE_CHARS = re.compile(r"[^A-Za-z0-9_]")


def locate(model: nn.Module, project: Project, plan: Plan,
           aliases: Mapping[str, tuple[str, ...]], logits: Mapping[str, str], *,
           uses: Iterable[tuple[str, Use]] | None = None,
           growing: Collection[str] | None = None, attention_multiplier: str = "") -> Sites:
    """``logits``: explicit-softmax site -> source of its q.k^T product. ``uses``: the uses
    that take a forward multiplier (default: those whose factor in ``plan`` is not 1);
    ``growing``: the attention sites that take the head size factor (default: every site
    ``plan`` edits), those whose d_head grows and those whose d_head is fixed but that take it
    so that a width with another head size is right too (their size is the base's, so the
    factor is 1 at the emitted widths); ``attention_multiplier``: a constant every attention
    edit multiplies in too."""
    readouts: dict[tuple, ReadoutSite] = {}
    multipliers: dict[str, dict[str, str]] = {}
    lookups: dict[str, dict[str, str]] = {}
    taken: dict[tuple[str, str], tuple[str, bool]] = {}
    for name, use in multiplied_uses(plan.report, plan.params) if uses is None else uses:
        file, line = place(use.source, project, f"the forward multiplier of {name!r}")
        host, cls = _host(model, project, use.module, file, line, use.source, name)
        callee = use.module[len(host) + 1:] if host else use.module
        param_attr = ""
        if use.module == host:
            callee = ""
            param_attr = _relative(aliases.get(name, (name,)), host, name, use.source)
        leaf = callee.rpartition(".")[2] if callee else param_attr.replace(".", "_")
        if leaf.isdigit():  # self.mlp[0]: a layer of a Sequential
            leaf = callee.replace(".", "_")
        tied = plan.report[name].tied
        lookup = tied and use.slot == "embedding"
        attribute = (f"mup_{_ATTRIBUTE_CHARS.sub('_', leaf)}_"  # a key may hold anything
                     f"{'input_' if lookup else ''}multiplier")
        scale_input = not isinstance(model.get_submodule(use.module),
                                     (nn.Embedding, nn.EmbeddingBag))
        weights = _under(aliases.get(name, (name,)), host)
        owners = _owners(model, host, weights, tied, lookup)
        site = ReadoutSite(line, cls, callee, param_attr, attribute, scale_input, file,
                           scope_of(model.get_submodule(host), project), weights, owners, tied,
                           lookup, _fronts(model, host, owners, callee if scale_input else ""))
        readouts.setdefault((file, line, cls, callee, param_attr, lookup), site)
        if taken.setdefault((host, attribute), (name, lookup)) != (name, lookup):
            raise EmitError(f"two parameters with multipliers are both read out through "
                            f"'{leaf}' in {host or 'the root module'}", where=use.source)
        (lookups if lookup else multipliers).setdefault(host, {})[attribute] = name
    attention, d_head = _attention_sites(model, project, plan, logits, growing,
                                         attention_multiplier)
    return Sites(tuple(readouts.values()), attention, multipliers, d_head, lookups=lookups)


def _attention_children(module: nn.Module) -> list[tuple[str, str]]:
    """(``self.<name>``, "softmax" | "mha"): the children a scan must know the type of."""
    return [(n, "softmax" if isinstance(m, nn.Softmax) else "mha")
            for n, m in module.named_children()
            if isinstance(m, (nn.Softmax, nn.MultiheadAttention))]


def _under(names: tuple[str, ...], host: str) -> tuple[str, ...]:
    """The parameter's names relative to ``host`` (those inside it)."""
    return tuple(n if not host else n[len(host) + 1:] for n in names
                 if not host or n.startswith(host + "."))


def _owners(model: nn.Module, host: str, weights: tuple[str, ...], tied: bool,
            lookup: bool = False) -> tuple[tuple[str, str], ...]:
    """(chain to the module holding the parameter, what a call of it needs): "input" (a
    linear map: scale its input), "output" (a lookup), "skip" (a tied weight's lookup, or
    for its ``lookup`` site its readout) or "refuse" (a module whose forward this class does
    not show)."""
    out = []
    for weight in weights:
        owner = weight.rpartition(".")[0]
        if not owner:
            continue
        module = model.get_submodule(f"{host}.{owner}" if host else owner)
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            kind = "skip" if tied and not lookup else "output"
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            kind = "skip" if lookup else "input"
        else:
            kind = "refuse"
        out.append((owner, kind))
    return tuple(out)


def _fronts(model: nn.Module, host: str, owners: tuple[tuple[str, str], ...], callee: str
            ) -> tuple[str, ...]:
    """The chains of nn.Sequential modules whose first layer is a linear map holding the
    parameter (``self.mlp`` for ``self.mlp[0]``): scaling their input scales its."""
    out: list[str] = []
    for chain in [o for o, kind in owners if kind == "input"] + ([callee] if callee else []):
        while "." in chain:
            parent, _, child = chain.rpartition(".")
            module = model.get_submodule(f"{host}.{parent}" if host else parent)
            if (not isinstance(module, nn.Sequential) or type(module).forward is not
                    nn.Sequential.forward or next(iter(module._modules), None) != child):
                break  # not a plain Sequential starting with it
            out.append(parent)
            chain = parent
    return tuple(dict.fromkeys(out))


_Key = tuple[Path, int, str]  # (file, line, kind)


def _attention_sites(model: nn.Module, project: Project, plan: Plan, logits: Mapping[str, str],
                     growing: Collection[str] | None, multiplier: str
                     ) -> tuple[tuple[AttentionScaleSite, ...], dict[str, int]]:
    """The sites to edit; each line's base head size constant (none where d_head is fixed:
    such a site takes only ``multiplier``)."""
    hosts = {edit.site: host.module for host in plan.hosts for edit in host.attention}
    bases: dict[_Key, set[int | None]] = {}
    axes: dict[_Key, set[int]] = {}
    scopes: dict[_Key, dict[tuple[Path, str], None]] = {}
    children: dict[_Key, dict[tuple[str, str], None]] = {}
    for site in plan.report.attention:
        if site.node not in hosts:
            continue
        if site.kind == "sdpa":
            file, line = place(site.source, project, "an attention scale")
            kind = "sdpa"
        elif site.node in logits:
            file, line = place(logits[site.node], project, "an attention logit factor")
            kind = "logits"
        else:
            raise EmitError("explicit softmax attention with no q.k^T product found",
                            where=site.source or site.node,
                            fix="use muprewrite.apply(model, ...) at runtime")
        grows = growing is None or site.node in growing
        if not grows and not multiplier:
            continue  # d_head fixed, no constant: nothing to write there
        size = site.d_head_base if site.d_head_grows else site.d_head_base or site.d_head
        assert size is not None or not grows  # make_plan checked it
        key = (file, line, kind)
        bases.setdefault(key, set()).add(size if grows else None)
        axes.setdefault(key, set()).add(site.d_head_axis)
        module = model.get_submodule(hosts[site.node])
        scopes.setdefault(key, {}).update(dict.fromkeys(scope_of(module, project)))
        children.setdefault(key, {}).update(dict.fromkeys(_attention_children(module)))
    _one_per_line(bases, axes)
    distinct = sorted({size for s in bases.values() for size in s if size is not None})
    names = {size: "MUP_D_HEAD_BASE" if len(distinct) == 1 else f"MUP_D_HEAD_BASE_{size}"
             for size in distinct}
    sites = []
    for (file, line, kind), s in sorted(bases.items()):
        size = next(iter(s))  # None: d_head fixed, no head size constant
        sites.append(AttentionScaleSite(line, "" if size is None else names[size], kind, file,
                                        tuple(scopes[file, line, kind]),
                                        tuple(children[file, line, kind]), multiplier,
                                        next(iter(axes[file, line, kind]))))
    return tuple(sites), {names[size]: size for size in distinct}


def _one_per_line(bases: Mapping[_Key, set[int | None]], axes: Mapping[_Key, set[int]]) -> None:
    """Refuse a line whose attention runs in several modules that need different code: one
    base head size constant, one axis of the query to read d_head from."""
    for (file, line, kind), sizes in bases.items():
        if len(sizes) > 1:
            known = sorted(size for size in sizes if size is not None)
            what = ("its head size growing in one module and fixed in another" if None in sizes
                    else f"base head sizes {known} in different modules")
            raise EmitError(f"the attention at line {line} runs with {what}; one constant cannot "
                            "serve both", where=f"{file}:{line}",
                            fix="use muprewrite.apply(model, ...) at runtime for this model")
        if len(axes[file, line, kind]) > 1 and None not in sizes:
            found = ", ".join(str(a) for a in sorted(axes[file, line, kind]))
            raise EmitError(f"the attention at line {line} runs in modules whose query holds the "
                            f"head size at different axes ({found}, from the end); one "
                            "expression cannot read d_head for all of them",
                            where=f"{file}:{line}",
                            fix="compute each layout on a line of its own, or use "
                                "muprewrite.apply(model, ...) at runtime for this model")


def _host(model: nn.Module, project: Project, module: str, file: Path, line: int, source: str,
          name: str) -> tuple[str, str]:
    """The innermost module around ``module`` whose class (in ``file``) holds ``line``."""
    path = module
    while True:
        for cls in type(model.get_submodule(path)).__mro__:
            found = project.class_site(cls)
            if found and found[0] == file and found[1][0] <= line <= found[1][1]:
                return path, cls.__name__
        if not path:
            raise EmitError(f"no module class in {file.name} holds line {line}, where "
                            f"{name!r} is read out", where=source,
                            fix="use muprewrite.apply(model, ...) at runtime")
        path = path.rpartition(".")[0]


def _relative(names: tuple[str, ...], host: str, name: str, source: str) -> str:
    for alias in names:
        if not host:
            return alias
        if alias.startswith(host + "."):
            return alias[len(host) + 1:]
    raise EmitError(f"{name!r} is read out in {host} but does not belong to it", where=source,
                    fix="use muprewrite.apply(model, ...) at runtime")
