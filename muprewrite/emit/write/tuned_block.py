"""The base hyperparameters in the emitted block: ``emit(..., hparams=...)``.

Given base hyperparameters (an HParams or a card), the block writes each as a named constant
(``MUP_OUTPUT_MULTIPLIER = 2.5``; all nine, those at 1 too, so that the file is retuned by
editing them), ``MUP_CLASSES`` (each parameter's class, which says the constants it takes),
``MUP_LOOKUPS`` (the attributes a tied embedding's lookups are scaled by), ``mup_hparams``
(class -> {quantity: constant}, read at each call), and patches ``mup_factors`` and
``mup_init`` to multiply them in exactly as ``muprewrite.apply(..., hparams=...)`` does
(``rewrite/plan.py``, ``with_hparams``). A file emitted without them has none of this: it is
byte for byte the file of the rule alone, and behaves as if each were 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...rules.hparams import HPARAM_ROWS, HParams
from ..cst.literals import comment_text, identifier, number, string
from ..errors import EmitError
from ..plan.tuned import CONSTANTS

if TYPE_CHECKING:
    pass

__all__ = ["TunedBlock", "patch"]

_WHAT = {
    "output_multiplier": "forward multiplier of the output weights (W x, not the bias)",
    "input_multiplier": "forward multiplier of the input weights and embeddings (and of a "
                        "tied embedding's lookups)",
    "attention_multiplier": "attention logits, at every attention",
    "hidden_init": "init std of the hidden weights (zero init stays zero)",
    "lr_input": "learning rate of the input weights and embeddings",
    "lr_hidden": "learning rate of the hidden weights",
    "lr_output": "learning rate of the output weights",
    "lr_vector": "learning rate of the biases, norm gains and tables",
    "branch_multiplier": "residual branches, with m_L ** -MUP_DEPTH_ALPHA",
}


@dataclass(frozen=True)
class TunedBlock:
    """What the block needs to write the base hyperparameters."""

    hparams: HParams
    rule: str
    classes: Mapping[str, str]  # parameter (layer index: *) -> class
    lookups: Mapping[str, Mapping[str, str]]  # module -> {attribute: tied parameter}
    attention: bool  # the file's attention edits take MUP_ATTENTION_MULTIPLIER
    branches: bool  # the residual branches take MUP_BRANCH_MULTIPLIER (a depth rule's file)
    card: str = ""  # the card's file name, for the comment

    def constants(self) -> list[str]:
        present = set(self.classes.values())
        used = {field for cls in present for _q, field in HPARAM_ROWS[cls]}
        if self.attention:
            used.add("attention_multiplier")
        card = f" (from {comment_text(self.card)})" if self.card else ""
        out = ["# base hyperparameters" + card + ": tuned on the proxy (the base model) and "
               "constant across", "# width; each multiplies the rule's factor of its class of "
               "parameters (MUP_CLASSES), as", "# muprewrite.apply(..., hparams=...) does. "
               "Edit them to retune. Written because the file was", "# emitted with base "
               "hyperparameters; one emitted without has none, as if each were 1.0"]
        for field, constant in CONSTANTS.items():
            value = getattr(self.hparams, field)
            if field == "branch_multiplier" and not self.branches:
                what = (f'residual branches: none scaled under rule "{comment_text(self.rule)}"'
                        "; must stay 1.0")
            else:
                what = _WHAT[field] + ("" if field in used or field == "branch_multiplier"
                                       else "; none in this model: no effect")
            out.append(f"{identifier(constant)} = {number(float(value))}  # {what}")
        return out

    def tables(self) -> list[str]:
        out = ["# per parameter (layer index: *): its class, which says the base hyperparameters "
               "it takes", "# (mup_hparams)", "MUP_CLASSES = {"]
        out += [f"    {string(name)}: {string(cls)}," for name, cls in self.classes.items()]
        out += ["}", "# a tied embedding's lookups: module -> {attribute: parameter whose "
                "\"lookup\" factor it holds}", "MUP_LOOKUPS = {"]
        for module, attrs in self.lookups.items():
            inner = ", ".join(f"{string(identifier(a))}: {string(p)}" for a, p in attrs.items())
            out.append(f"    {string(module)}: {{{inner}}},")
        return [*out, "}"]

    def functions(self) -> str:
        present = [cls for cls in HPARAM_ROWS if cls in set(self.classes.values())]
        rows = "\n".join(
            f'        "{cls}": {{' + ", ".join(f'"{q}": {CONSTANTS[f]}' for q, f in HPARAM_ROWS[cls])
            + "}," for cls in present)
        out = [_TABLE.format(rows=rows), _APPLY]
        if not self.branches:
            out.append(_FIXED.format(why=string(
                f'muP: MUP_BRANCH_MULTIPLIER scales residual branches under a depth rule; rule '
                f'"{self.rule}" has none in this file: leave it at 1.0, or emit the file with '
                "--rule completep (or depth-mup)")))
        return "\n\n".join(out)


_TABLE = '''def mup_hparams(kind: str) -> dict[str, float]:
    """The base hyperparameters a parameter of class ``kind`` (MUP_CLASSES) takes, per quantity;
    read at each call, so that the MUP_* constants may be set before the model is built."""
    return {{
{rows}
    }}[kind]
'''

_APPLY = '''def _mup_with_hparams(factors: dict[str, dict[str, float]], keys: dict[str, str]
                      ) -> dict[str, dict[str, float]]:
    """``factors`` times the base hyperparameters of each parameter's class (``keys``: each
    parameter's name in MUP_CLASSES, its own or its base partner's)."""
    for name, key in keys.items():
        kind = MUP_CLASSES.get(key) or MUP_CLASSES.get(re.sub(r"(^|\\.)\\d+(?=\\.)", r"\\1*", key))
        if kind is None or key in MUP_UNUSED:
            continue
        f = factors.setdefault(name, {})
        for quantity, value in mup_hparams(kind).items():
            f[quantity] = f.get(quantity, 1.0) * value
    return factors
'''

_FIXED = '''def _mup_fixed_hparams() -> None:
    """The base hyperparameters this file has nothing to put on must stay 1.0."""
    if MUP_BRANCH_MULTIPLIER != 1.0:
        raise ValueError({why})
'''

_LOOKUPS = '''    for path, attributes in MUP_LOOKUPS.items():  # a tied embedding's lookups
        for attribute, name in attributes.items():
            factor = model.mup_factors.get(name, {}).get("lookup", 1.0)
            setattr(model.get_submodule(path), attribute, factor)
'''
_MULTIPLIERS = '''            factor = model.mup_factors.get(name, {}).get("multiplier", 1.0)
            setattr(model.get_submodule(path), attribute, factor)
'''
_GUARD = ('    global _MUP_BUILDING_BASE\n',
          '    _mup_fixed_hparams()\n    global _MUP_BUILDING_BASE\n')
_WIDTH = (
    ("    return factors\n", "    return _mup_with_hparams(factors, {name: name for name in ours})\n"),
    ("""            if ref is None or ref.shape == p.shape or not p.requires_grad or p.is_meta:
                continue
            if name in MUP_UNUSED or (rms := _mup_rms(p)) == 0.0:
                continue  # zero init stays zero
            p.mul_(model.mup_factors.get(name, {}).get("init", 1.0) * _mup_rms(ref) / rms)
""", """            if ref is None or not p.requires_grad or p.is_meta:
                continue
            if name in MUP_UNUSED or (rms := _mup_rms(p)) == 0.0:
                continue  # zero init stays zero
            init = model.mup_factors.get(name, {}).get("init", 1.0)
            if ref.shape == p.shape:  # the base width: the model's own draw x its init factor
                p.mul_(init)
            else:
                p.mul_(init * _mup_rms(ref) / rms)
"""),
    (_MULTIPLIERS, _MULTIPLIERS + _LOOKUPS),
)
_DEPTH = (
    ("    return factors\n", "    return _mup_with_hparams(factors, partners)\n"),
    ("""            if (ref.shape == p.shape and not deeper) or not p.requires_grad or p.is_meta:
                continue
            if partners[name] in MUP_UNUSED or (rms := _mup_rms(p)) == 0.0:
                continue  # zero init stays zero
            p.mul_(model.mup_factors.get(name, {}).get("init", 1.0) * _mup_rms(ref) / rms)
""", """            if not p.requires_grad or p.is_meta:
                continue
            if partners[name] in MUP_UNUSED or (rms := _mup_rms(p)) == 0.0:
                continue  # zero init stays zero
            init = model.mup_factors.get(name, {}).get("init", 1.0)
            if ref.shape == p.shape and not deeper:  # the base's size: own draw x init factor
                p.mul_(init)
            else:
                p.mul_(init * _mup_rms(ref) / rms)
"""),
    ("            module.mup_branch_multiplier = m_depth ** -MUP_DEPTH_ALPHA\n",
     "            module.mup_branch_multiplier = MUP_BRANCH_MULTIPLIER * m_depth ** "
     "-MUP_DEPTH_ALPHA\n"),
    (_MULTIPLIERS, _MULTIPLIERS + _LOOKUPS),
)


def patch(functions: str, tuned: TunedBlock, depth: bool) -> str:
    """``mup_factors`` and ``mup_init`` (the text of ``functions``) with the base
    hyperparameters multiplied in."""
    edits = [*(_DEPTH if depth else _WIDTH), *(() if tuned.branches else (_GUARD,))]
    for old, new in edits:
        if functions.count(old) != 1:  # the templates changed under this module
            raise EmitError("internal: the emitted mup_init does not have the text the base "
                            "hyperparameters are patched into", fix="please report it")
        functions = functions.replace(old, new)
    return functions
