"""Stage 6a — where the source changes go: from the plan to lines and calls in the user's file.

A readout multiplier is placed on the call that feeds the weight (``self.linear(x)``), in the
method of the module instance ("host") whose class is written in the file and holds that
line. An attention scale is placed on the ``scaled_dot_product_attention`` call at the
attention site's line. A change that would fall outside the file (a library module) is an
error naming the place: the emitter never writes a silently incomplete model.

Each site also carries what the pattern scans (``readouts.py``, ``attention.py``) need to
find the same computation on paths no capture ran: the classes of the host's MRO written in
the file (``scope``), and for a readout every name of its parameter and the kind of module
that owns it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from torch import nn

from ..errors import MuprewriteError
from ..rewrite.plan import Plan, multiplied_uses

__all__ = ["EmitError", "ReadoutSite", "AttentionScaleSite", "Sites", "locate", "split_source"]


class EmitError(MuprewriteError):
    """The model file cannot be rewritten into muP as source."""


@dataclass(frozen=True)
class ReadoutSite:
    """Multiply at ``line``: the input of ``self.<callee>(...)`` (or, for a functional use,
    the call taking ``self.<param_attr>``) by ``self.<attribute>``."""

    line: int
    host_class: str
    callee: str  # attribute chain after ``self.``; "" for a functional use in the host itself
    param_attr: str  # chain after ``self.`` to the parameter (functional uses)
    attribute: str
    scale_input: bool  # False: scale the call's result (an embedding lookup)
    scope: tuple[str, ...] = ()  # classes of the host's MRO written in the file
    weights: tuple[str, ...] = ()  # every chain after ``self.`` to the parameter
    owners: tuple[tuple[str, str], ...] = ()  # (chain to the module owning it, call kind)
    tied: bool = False  # a tied embedding/readout weight: its lookups stay unscaled


@dataclass(frozen=True)
class AttentionScaleSite:
    """``kind="sdpa"``: set ``scale=`` of the SDPA call at ``line``; ``"logits"``: multiply
    the q.k^T product at ``line`` (explicit softmax attention)."""

    line: int
    constant: str  # name of the base head size constant
    kind: str = "sdpa"
    scope: tuple[str, ...] = ()  # classes of the attention module's MRO written in the file
    children: tuple[tuple[str, str], ...] = ()  # (``self.<name>``, "softmax" | "mha")


@dataclass(frozen=True)
class Sites:
    readouts: tuple[ReadoutSite, ...]
    attention: tuple[AttentionScaleSite, ...]
    multipliers: Mapping[str, Mapping[str, str]]  # host path -> {attribute: parameter}
    d_head: Mapping[str, int]  # constant name -> base head size


def split_source(source: str) -> tuple[str, int]:
    file, _, line = source.rpartition(":")
    return file, int(line) if line.isdigit() else 0


def locate(model: nn.Module, user: ModuleType, file: Path, plan: Plan,
           spans: Mapping[str, tuple[int, int]], aliases: Mapping[str, tuple[str, ...]],
           logits: Mapping[str, str]) -> Sites:
    """``spans``: top-level class name -> (first line, last line) in ``file``; ``logits``:
    explicit-softmax site -> source of its q.k^T product."""
    readouts: dict[tuple, ReadoutSite] = {}
    multipliers: dict[str, dict[str, str]] = {}
    for name, use in multiplied_uses(plan.report, plan.params):
        line = _line_in_file(use.source, file, f"the forward multiplier of {name!r}")
        host, cls = _host(model, user, spans, use.module, line, use.source, name)
        callee = use.module[len(host) + 1:] if host else use.module
        param_attr = ""
        if use.module == host:
            callee = ""
            param_attr = _relative(aliases.get(name, (name,)), host, name, use.source)
        leaf = callee.rpartition(".")[2] if callee else param_attr.replace(".", "_")
        attribute = f"mup_{leaf}_multiplier"
        scale_input = not isinstance(model.get_submodule(use.module),
                                     (nn.Embedding, nn.EmbeddingBag))
        tied = plan.report[name].tied
        weights = _under(aliases.get(name, (name,)), host)
        site = ReadoutSite(line, cls, callee, param_attr, attribute, scale_input,
                           _scope(model.get_submodule(host), user, spans), weights,
                           _owners(model, host, weights, tied), tied)
        readouts.setdefault((line, cls, callee, param_attr), site)
        taken = multipliers.setdefault(host, {})
        if taken.get(attribute, name) != name:
            raise EmitError(f"two parameters with multipliers are both read out through "
                            f"'{leaf}' in {host or 'the root module'}", where=use.source)
        taken[attribute] = name
    attention, d_head = _attention_sites(model, user, spans, plan, file, logits)
    return Sites(tuple(readouts.values()), attention, multipliers, d_head)


def _scope(module: nn.Module, user: ModuleType, spans: Mapping[str, tuple[int, int]]
           ) -> tuple[str, ...]:
    """The classes of ``module``'s MRO that are written in the file."""
    return tuple(c.__name__ for c in type(module).__mro__
                 if c.__module__ == user.__name__ and c.__name__ in spans)


def _attention_children(module: nn.Module) -> list[tuple[str, str]]:
    """(``self.<name>``, "softmax" | "mha"): the children a scan must know the type of."""
    return [(n, "softmax" if isinstance(m, nn.Softmax) else "mha")
            for n, m in module.named_children()
            if isinstance(m, (nn.Softmax, nn.MultiheadAttention))]


def _under(names: tuple[str, ...], host: str) -> tuple[str, ...]:
    """The parameter's names relative to ``host`` (those inside it)."""
    return tuple(n if not host else n[len(host) + 1:] for n in names
                 if not host or n.startswith(host + "."))


def _owners(model: nn.Module, host: str, weights: tuple[str, ...], tied: bool
            ) -> tuple[tuple[str, str], ...]:
    """(chain to the module holding the parameter, what a call of it needs): "input" (a
    linear map: scale its input), "output" (a lookup), "skip" (a tied weight's lookup) or
    "refuse" (a module whose forward this class does not show)."""
    out = []
    for weight in weights:
        owner = weight.rpartition(".")[0]
        if not owner:
            continue
        module = model.get_submodule(f"{host}.{owner}" if host else owner)
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            kind = "skip" if tied else "output"
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            kind = "input"
        else:
            kind = "refuse"
        out.append((owner, kind))
    return tuple(out)


def _attention_sites(model: nn.Module, user: ModuleType, spans: Mapping[str, tuple[int, int]],
                     plan: Plan, file: Path, logits: Mapping[str, str]
                     ) -> tuple[tuple[AttentionScaleSite, ...], dict[str, int]]:
    hosts = {edit.site: host.module for host in plan.hosts for edit in host.attention}
    bases: dict[tuple[int, str], set[int]] = {}
    scopes: dict[tuple[int, str], dict[str, None]] = {}
    children: dict[tuple[int, str], dict[tuple[str, str], None]] = {}
    for site in plan.report.attention:
        if site.node not in hosts:
            continue
        if site.kind == "sdpa":
            line, kind = _line_in_file(site.source, file, "an attention scale"), "sdpa"
        elif site.node in logits:
            line = _line_in_file(logits[site.node], file, "an attention logit factor")
            kind = "logits"
        else:
            raise EmitError("explicit softmax attention with no q.k^T product found",
                            where=site.source or site.node,
                            fix="use muprewrite.apply(model, ...) at runtime")
        assert site.d_head_base is not None  # make_plan checked it
        bases.setdefault((line, kind), set()).add(site.d_head_base)
        module = model.get_submodule(hosts[site.node])
        scopes.setdefault((line, kind), {}).update(dict.fromkeys(_scope(module, user, spans)))
        children.setdefault((line, kind), {}).update(dict.fromkeys(_attention_children(module)))
    for (line, _kind), sizes in bases.items():
        if len(sizes) > 1:
            raise EmitError(f"the attention at line {line} runs with base head sizes "
                            f"{sorted(sizes)} in different modules; one constant cannot serve "
                            "both", where=f"{file}:{line}",
                            fix="use muprewrite.apply(model, ...) at runtime for this model")
    distinct = sorted({next(iter(s)) for s in bases.values()})
    names = {size: "MUP_D_HEAD_BASE" if len(distinct) == 1 else f"MUP_D_HEAD_BASE_{size}"
             for size in distinct}
    sites = tuple(AttentionScaleSite(line, names[next(iter(s))], kind, tuple(scopes[line, kind]),
                                     tuple(children[line, kind]))
                  for (line, kind), s in sorted(bases.items()))
    return sites, {names[size]: size for size in distinct}


def _line_in_file(source: str, file: Path, what: str) -> int:
    where, line = split_source(source)
    if not where or not line:
        raise EmitError(f"{what} has no source line to edit", where=source or "?",
                        fix="use muprewrite.apply(model, ...) at runtime")
    if Path(where).resolve() != file.resolve():
        raise EmitError(f"{what} belongs at {where}:{line}, outside {file.name}",
                        where=f"{where}:{line}",
                        fix=f"define that module in {file.name} (a local subclass), or use "
                            "muprewrite.apply(model, ...) at runtime")
    return line


def _host(model: nn.Module, user: ModuleType, spans: Mapping[str, tuple[int, int]], module: str,
          line: int, source: str, name: str) -> tuple[str, str]:
    """The innermost module around ``module`` whose class (in the file) holds ``line``."""
    path = module
    while True:
        for cls in type(model.get_submodule(path)).__mro__:
            span = spans.get(cls.__name__)
            if cls.__module__ == user.__name__ and span and span[0] <= line <= span[1]:
                return path, cls.__name__
        if not path:
            raise EmitError(f"no module class in the file holds line {line}, where {name!r} "
                            "is read out", where=source,
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
