"""``emit(path, model, base)``: the user's model file, rewritten into muP as source text.

Analysis runs on the meta device (no memory, no RNG drawn); the emitted file carries the
base constructor call and a seed, and matches its init to that base at run time, as
``muprewrite.apply`` does with the base it is handed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import libcst as cst
import torch
from libcst.metadata import MetadataWrapper

from ..analysis.attention import HeadsConvention, find_attention
from ..analysis.report import ParamInfo, Report
from ..analysis.source import node_source
from ..analyzer import analyze_with_capture
from ..capture import aliases
from ..errors import InputSpecError
from ..files import SourceError, SourceText, read_source, split_lines
from ..rewrite.plan import make_plan, tied_multiplier
from ..rules import Exponents, Rule, load_rule
from ..spec import build_model, load_module, parse_inputs
from .block import MARKER, Entry, collapse, render_block, render_header
from .complete import Edits, complete
from .sites import EmitError, Sites, locate
from .source import SourceFile
from .transform import SourceEdits, class_spans, rewrite

__all__ = ["Emission", "emit", "is_emitted", "emitted_rule"]

_QUANTITIES = ("init", "multiplier", "lr", "eps", "weight_decay")


@dataclass(frozen=True)
class Emission:
    source: str  # the new file's text, line endings as in the input
    changes: tuple[str, ...]  # one line per kind of change, for people
    original: str = ""  # the input's text, decoded as ``source`` is (for diffs)
    encoding: str = "utf-8"  # the input's encoding ("utf-8-sig": it starts with a BOM)

    @property
    def data(self) -> bytes:
        """The new file's bytes: the input's encoding, BOM and line endings."""
        return self.source.encode(self.encoding)


def is_emitted(text: str) -> bool:
    """Whether ``text`` is a file this emitter wrote (its header carries the marker)."""
    return emitted_rule(text) is not None


def emitted_rule(text: str) -> str | None:
    for line in text.splitlines()[:5]:
        if line.startswith(MARKER):
            return line.split('rule "', 1)[1].split('"', 1)[0] if 'rule "' in line else "?"
    return None


def emit(path: str | Path, model_expr: str, base_expr: str, *, rule: str | Rule = "mup",
         inputs_expr: str | None = None, seed: int = 0, heads: HeadsConvention = "grow",
         device: str = "meta", progress: Callable[[str], None] | None = None) -> Emission:
    """The text of ``path`` rewritten into ``rule`` for the model ``model_expr``.

    The file is decoded as Python decodes it (BOM, PEP 263 coding comment) with its line
    endings kept; the result is in the same encoding and endings. Raises EmitError (or
    another MuprewriteError) without touching any file.
    """
    path = Path(path)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise EmitError(f"seed {seed!r} is not an integer in [0, 2**63)",
                        fix="pass a seed such as 0 (torch.manual_seed takes 64-bit seeds)")
    try:
        original = read_source(path)
    except SourceError as exc:
        raise EmitError(exc.message, fix=exc.fix) from None
    text = original.text
    done = emitted_rule(text)
    if done is not None:
        raise EmitError(f"{path} was written by muprewrite (rule {done!r}); rewriting it again "
                        "would apply muP twice", fix="run muprewrite on the original file")
    try:
        wrapper = MetadataWrapper(cst.parse_module(text))
    except cst.ParserSyntaxError as exc:
        raise EmitError(f"{path}:{exc.raw_line}: syntax error: {exc.message}") from None
    rule = load_rule(rule) if isinstance(rule, str) else rule
    user = load_module(path)
    model = build_model(user, model_expr, "--model", device=device)
    base = build_model(user, base_expr, "--base", device=device)
    _check_base_differs(model, base, model_expr, base_expr)
    root = type(model)
    spans = class_spans(wrapper)
    if root.__module__ != user.__name__ or root.__name__ not in spans:
        raise EmitError(f"--model builds {root.__name__}, which is not defined in {path.name}",
                        fix=f"emit the file that defines {root.__name__}")
    inputs = parse_inputs(inputs_expr, device=device) if inputs_expr else None
    if inputs is None and not callable(getattr(model, "example_inputs", None)):
        raise InputSpecError(f"{root.__name__} has no example_inputs() method",
                             fix='pass --inputs, e.g. --inputs "float(2, 4, 32, 32), int(2, high=1000)"')
    report, cap = analyze_with_capture(model, inputs, base=base, heads=heads, progress=progress)
    names = aliases(model)
    plan = make_plan(report, cap.graph, rule, names)
    if progress:
        progress("locating the edits in the source")
    nodes = {n.name: n for n in cap.graph.nodes}
    logits = {p.node: str(node_source(nodes[p.logits]) or "") for p in find_attention(cap.graph)
              if p.kind == "softmax" and p.logits is not None}
    sites = locate(model, user, path, plan, spans, names, logits)
    edits = complete(SourceFile(wrapper, path), sites)  # every path of the host classes

    entries = collapse({info.name: _entry(info, rule) for info in report})
    unused = [i.name for i in report if i.role == "unused"]
    imports = [f"import {m}" for m in ("re", "torch") if not _imports(wrapper.module, m)]
    base_call = _call_text(base_expr)
    block = render_block(rule=rule.id, seed=seed, base_call=base_call, entries=entries,
                         unused=unused, multipliers=sites.multipliers, d_head=sites.d_head,
                         uses_eps=rule.optimizer == "adam", imports=imports)
    changes = _changes(root.__name__, report, sites, edits)
    header = render_header(path.name, rule.id, rule.title, changes, base_call)
    source = rewrite(wrapper, SourceEdits(edits, root.__name__, str(path)), block, header)
    data = _encode(path, original, source)
    try:
        compile(data, str(path), "exec")  # as bytes: the coding comment and BOM are checked too
    except SyntaxError as exc:  # a bug here, never the user's
        raise EmitError(f"internal error: the emitted code does not compile ({exc})",
                        fix="please report it with the model file") from None
    return Emission(source, tuple(changes), text, original.encoding)


def _encode(path: Path, original: SourceText, source: str) -> bytes:
    """``source`` in the input's encoding; EmitError if the added code does not fit in it."""
    try:
        return original.encode(source)
    except UnicodeEncodeError as exc:
        line = len(split_lines(source[:exc.start] + "x"))
        raise EmitError(f"{path} is encoded as {original.encoding}, which cannot hold "
                        f"{exc.object[exc.start:exc.end]!r} in the muP code at line {line} "
                        "of the output",
                        fix="save the file as UTF-8 (and make its coding comment utf-8), or "
                            "use only ASCII in --base and the file name") from None


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


def _entry(info: ParamInfo, rule: Rule) -> Entry | None:
    if info.role == "unused":
        return None
    row = rule.scaling(info.role, info.kind)
    exps: dict[str, Exponents] = {q: getattr(row, q) for q in _QUANTITIES}
    if info.tied:  # its readout use scales as an output weight's
        exps["multiplier"] = tied_multiplier(rule, row)
    kept = tuple((q, float(e.m_in) + 0.0, float(e.m_out) + 0.0)  # + 0.0: no -0.0 printed
                 for q, e in exps.items() if e.m_in or e.m_out)
    return Entry(info.fan_in, info.fan_out, kept) if kept else None


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


def _changes(root: str, report: Report, sites: Sites, edits: Edits) -> list[str]:
    rescaled = sum(1 for info in report if info.role in ("input", "hidden", "output"))
    out = [f"{root}.__init__ ends with mup_init(self) (init scale of {rescaled} parameters, "
           "forward multipliers)"]
    if sites.readouts:
        where = sorted({f"{s.host_class}.{s.callee or s.param_attr}" for s in sites.readouts})
        out.append(f"output multiplier at {', '.join(where)} (line(s) "
                   f"{', '.join(map(str, edits.lines['readout']))})")
    if edits.lines["attention"]:
        out.append("attention logit scale at line(s) "
                   f"{', '.join(map(str, edits.lines['attention']))}")
    out += edits.unverified
    out.append("added MUP_* constants, mup_init and mup_param_groups(model, lr, weight_decay)")
    return out
