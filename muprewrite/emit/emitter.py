"""``emit(path, model, base)``: the user's model file, rewritten into muP as source text.

Analysis runs on the meta device (no memory, no RNG drawn); the emitted file carries the
base constructor call and a seed, and matches its init to that base at run time, as
``muprewrite.apply`` does with the base it is handed. Given base hyperparameters (a card),
the block also holds them as constants and applies them as ``apply(..., hparams=...)`` does
(``write/tuned_block.py``); without, the file is that of the rule alone, byte for byte.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import libcst as cst
import torch

from ..analysis.analyze import analyze_with_capture
from ..analysis.attention import HeadsConvention, find_attention
from ..analysis.report import AttentionSite, Report
from ..capture.export import aliases
from ..capture.source import node_source
from ..rewrite.constants import refuse_width_constants
from ..rewrite.plan import make_plan, multiplied_uses
from ..rules import Rule, load_rule
from ..rules.hparams import DEFAULT_HPARAMS, HParamsLike, as_hparams
from ..spec import build_model, inputs_for, load_module
from .errors import EmitError
from .find.branches import locate_branches
from .find.locate import locate
from .find.project import Project
from .find.sites import Sites
from .plan.complete import complete
from .plan.depth import DepthBlock, base_entries, depth_block, partners_of
from .plan.edits import Edits
from .plan.entries import collapse, param_entry, width_axes
from .plan.head_guards import head_guards
from .plan.tuned import card_name, classes_of, locate_tuned
from .write.assemble import BlockFor, assemble
from .write.block import render_block
from .write.emission import Emission
from .write.head_guard_block import GUARD_FUNCTION, render_guards
from .write.header import emitted_rule
from .write.optimizer_block import Training
from .write.tuned_block import TunedBlock

__all__ = ["emit"]


def emit(path: str | Path, model_expr: str, base_expr: str, *, rule: str | Rule = "mup",
         inputs_expr: str | Sequence[str] | None = None, seed: int = 0, heads: HeadsConvention = "grow",
         device: str = "meta", hparams: HParamsLike = None,
         progress: Callable[[str], None] | None = None) -> Emission:
    """The text of ``path`` rewritten into ``rule`` for the model ``model_expr``, with every
    other file of the user's project that needs an edit (a readout or an attention defined
    there).

    ``hparams``: base hyperparameters tuned on the proxy (a ``muprewrite.HParams``, a mapping,
    or a card's path), as ``muprewrite.apply(..., hparams=...)`` takes them: the block then
    writes all nine as MUP_* constants and applies them as ``apply`` does, with a forward
    multiplier at every input and output weight's use and a factor at every attention (so
    that each constant can be edited). None (default): no constants, the rule alone.

    Each file is decoded as Python decodes it (BOM, PEP 263 coding comment) with its line
    endings kept; the result is in the same encoding and endings. Raises EmitError (or
    another MuprewriteError) without touching any file.
    """
    path = Path(path)
    project = _open(path, seed)
    rule = load_rule(rule) if isinstance(rule, str) else rule
    tuned = None if hparams is None else as_hparams(hparams, rule.id)
    before = dict(sys.modules)
    user = load_module(path)
    model = build_model(user, model_expr, "--model", device=device)
    base = build_model(user, base_expr, "--base", device=device)
    _check_base_differs(model, base, model_expr, base_expr)
    _check_root(project, user, model, path)
    inputs = inputs_for(model, inputs_expr, device=device)
    report, cap = analyze_with_capture(model, inputs, base=base, heads=heads, progress=progress)
    names = aliases(model)
    plan = make_plan(report, cap.graph, rule, names, tuned or DEFAULT_HPARAMS)
    refuse_width_constants(report)
    if progress:
        progress("locating the edits in the source")
    nodes = {n.name: n for n in cap.graph.nodes}
    logits = {p.node: str(node_source(nodes[p.logits]) or "") for p in find_attention(cap.graph)
              if p.kind == "softmax" and p.logits is not None}
    deep = rule.has_depth and report.residuals is not None and bool(report.residuals.branches)
    # attention with a fixed head size: guarded in mup_init by an attribute, or else edited
    guards, unguarded = (head_guards(model, base, report, rule, attributes=not deep)
                         if tuned is None else ({}, []))

    def locate_all(fixed: Sequence[AttentionSite]) -> tuple[Sites, dict[Path, Edits]]:
        if tuned is not None:
            found = locate_tuned(model, project, plan, cap.graph, rule, names, logits)
        elif fixed:  # those take the head size factor too (1 at the emitted widths)
            every = make_plan(report, cap.graph, rule, names,
                              replace(plan.hparams, attention_multiplier=2.0))  # every site
            growing = {s.node for s in report.attention if s.d_head_grows}
            found = locate(model, project, every, names, logits,
                           uses=multiplied_uses(report, plan.params),
                           growing=growing | {s.node for s in fixed})
        else:
            found = locate(model, project, plan, names, logits)
        if deep:  # the residual adds take m_L^-alpha, at any depth the file is built at
            found = replace(found, branches=locate_branches(model, project, report, cap.graph))
        return found, _main_first(project.main, complete(project, found))  # every path

    unedited: list[str] = []
    try:
        sites, edits = locate_all(unguarded)
    except EmitError as error:
        if not unguarded:
            raise
        sites, edits = locate_all(())  # the sites that need no edit stay as they are
        unedited = list(dict.fromkeys(f"{s.source or s.node} ({error.message})"
                                      for s in unguarded))
    base_call = _call_text(base_expr)
    depth = depth_block(model, base, report, rule, project, edits, sites,
                        cap) if deep else None
    partners = _partners(model, base, depth)
    tuned_block = None if tuned is None else TunedBlock(
        tuned, rule.id, collapse(classes_of(report, partners)), sites.lookups,
        bool(sites.attention), depth is not None, card_name(hparams))
    block = _block_for(report, rule, sites, seed, base_call, project.parsed(path).wrapper.module,
                       depth, partners, tuned_block,
                       (render_guards(guards), GUARD_FUNCTION if guards else ""))
    rescaled = sum(1 for info in report if info.role in ("input", "hidden", "output"))
    files, changes = assemble(project, edits, sites, root=type(model).__name__, rule=rule,
                              base_call=base_call, block=block, rescaled=rescaled,
                              tuned=None if tuned is None else (
                                  f"base hyperparameters ({tuned}) as MUP_* constants, applied "
                                  "as muprewrite.apply(..., hparams=...) does"))
    first = files[0]
    unused = report.uncaptured({n: tuple(p.shape) for n, p in base.named_parameters()})
    if unedited:
        changes = (*changes, f"WARNING: attention at {', '.join(unedited[:3])} has no logit "
                   "edit (its head size is the same in --base and --model), its source cannot "
                   "take one, and no attribute of its module holds its head size for mup_init "
                   "to check: the file is right only at widths that keep that head size; add "
                   "an int attribute holding the head size to its module (self.head_dim = ...), "
                   "or use muprewrite.apply(model, ...) at runtime")
    if unused:  # no factor for them: the forward may use them on a path no capture ran
        changes = (*changes, f"WARNING: {len(unused)} trainable parameter(s) that grow with "
                   f"width are used by no captured op and get no muP factor: "
                   f"{', '.join(unused[:10])}; repeat --inputs, one set per path of the forward, "
                   "or freeze them if they are dead")
    return Emission(first.source, changes, first.original, first.encoding, files,
                    project.root, _imported(before, project))


def _open(path: Path, seed: int) -> Project:
    """The project of ``path``, its main file read and parsed; refuses a bad seed and a file
    this emitter wrote."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise EmitError(f"seed {seed!r} is not an integer in [0, 2**63)",
                        fix="pass a seed such as 0 (torch.manual_seed takes 64-bit seeds)")
    project = Project(path)
    done = emitted_rule(project.parsed(path).text.text)
    if done is not None:
        raise EmitError(f"{path} was written by muprewrite (rule {done!r}); rewriting it again "
                        "would apply muP twice", fix="run muprewrite on the original file")
    return project


def _check_root(project: Project, user: ModuleType, model: torch.nn.Module, path: Path) -> None:
    """The root model class must be defined in the main file: the block goes there."""
    root = type(model)
    found = project.class_site(root)
    if root.__module__ != user.__name__ or found is None or found[0] != project.main:
        raise EmitError(f"--model builds {root.__name__}, which is not defined in {path.name}",
                        fix=f"emit the file that defines {root.__name__}")


def _block_for(report: Report, rule: Rule, sites: Sites, seed: int, base_call: str,
               module: cst.Module, depth: DepthBlock | None, partners: Mapping[str, str],
               tuned: TunedBlock | None = None,
               guard: tuple[Sequence[str], str] = ((), "")) -> BlockFor:
    """The main file's block, given the head size constants it defines and those defined
    elsewhere. Under a depth rule (``depth``) the entries are keyed by the base's parameters
    (``partners``: model parameter -> base parameter)."""
    if depth is None:
        entries = collapse({info.name: param_entry(info, rule) for info in report})
        unused = [i.name for i in report if i.role == "unused"]
    else:
        entries = collapse(base_entries(report, rule, partners, param_entry))
        unused = sorted({partners[i.name] for i in report if i.role == "unused"})
    imports = [f"import {m}" for m in ("re", "torch") if not _imports(module, m)]
    axes = width_axes(report, partners)

    def block(d_head: Mapping[str, int], elsewhere: Sequence[tuple[str, int, str]]) -> str:
        return render_block(rule=rule.id, seed=seed, base_call=base_call, entries=entries,
                            unused=unused, multipliers=sites.multipliers, d_head=d_head,
                            training=_training(rule), imports=imports,
                            elsewhere=elsewhere, depth=depth, tuned=tuned, guard=guard,
                            width_axes=axes)

    return block


def _training(rule: Rule) -> Training:
    return Training(rule.optimizer, rule.muon.adjust_lr_fn if rule.muon is not None else None,
                    rule.weight_decay_coupling == "independent",
                    rule.vector_weight_decay != "none")


def _partners(model: torch.nn.Module, base: torch.nn.Module, depth: DepthBlock | None
              ) -> dict[str, str]:
    return partners_of(model, base, depth) if depth is not None else {}


def _main_first(main: Path, edits: Mapping[Path, Edits]) -> dict[Path, Edits]:
    """The main file always changes (mup_init, the block), and comes first."""
    empty = Edits({}, {}, {"readout": (), "attention": (), "branch": ()}, ())
    return {main: edits.get(main, empty), **{f: e for f, e in edits.items() if f != main}}


def _imported(before: Mapping[str, object], project: Project) -> tuple[Path, ...]:
    """The project's files imported since ``before`` (loading the model file, building and
    running the models)."""
    files = set()
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if before.get(name) is not module and file and project.owns(file):
            files.add(Path(os.path.realpath(Path(file).parent)) / Path(file).name)
    return tuple(sorted(files))


def _check_base_differs(model: torch.nn.Module, base: torch.nn.Module, model_expr: str,
                        base_expr: str) -> None:
    """A base with the model's sizes everywhere gives no width evidence: the emitted file
    would carry no factor at any width."""
    ours = {n: tuple(p.shape) for n, p in model.named_parameters()}
    if ours == {n: tuple(p.shape) for n, p in base.named_parameters()}:
        raise EmitError(f"the base must differ in width: --base {base_expr.strip()} has every "
                        f"parameter size of --model {model_expr.strip()}",
                        fix="pass as --base the model at the width you tune on, e.g. half "
                            "the hidden size")


def _imports(module: cst.Module, name: str) -> bool:
    for stmt in module.body:
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                if isinstance(small, cst.Import) and any(
                        a.asname is None and module.code_for_node(a.name) == name
                        for a in small.names):
                    return True
    return False


def _call_text(expr: str) -> str:
    """The --base expression as code (a bare class name becomes a call)."""
    node = cst.parse_expression(expr.strip())
    return cst.Module([]).code_for_node(node if isinstance(node, cst.Call) else cst.Call(node))
