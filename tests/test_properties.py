"""Property tests on random architectures: roles equal the two-width ground truth and do not
depend on module names or registration order; apply at base width changes nothing; apply
equals muP written by hand; applying twice is refused and changes nothing; the emitted source
equals apply.

Profiles (registered in conftest.py): ``ci`` (default, used by make test) and ``thorough``
(HYPOTHESIS_PROFILE=thorough, 500 examples per property; ``make test-thorough``).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
import torch
from emitted import import_without_muprewrite
from ground_truth import ground_truth_roles
from hypothesis import given
from hypothesis import strategies as st
from random_arch import FREE_FANS, HEAD_DIM, Attention, NetSpec, RandomNet
from renaming import rename_tree
from strategies import net_specs, widths

import muprewrite
from muprewrite import analyze
from muprewrite.emit import emit

pytestmark = pytest.mark.properties


def _pair(spec: NetSpec, sizes: tuple[int, int]) -> tuple[RandomNet, RandomNet]:
    with torch.device("meta"):
        return RandomNet(spec, sizes[0]), RandomNet(spec, sizes[1])


def _diff(report, truth):  # type: ignore[no-untyped-def]
    return {n: (report[n].role, t) for n, t in truth.items() if report[n].role != t}


@given(spec=net_specs(), sizes=widths)
def test_single_capture_roles_equal_ground_truth(spec: NetSpec, sizes: tuple[int, int]) -> None:
    wide, base = _pair(spec, sizes)
    report = analyze(wide, heads=spec.heads)  # type: ignore[arg-type]
    assert _diff(report, ground_truth_roles(wide, base, FREE_FANS)) == {}


@given(spec=net_specs(), sizes=widths)
def test_base_capture_roles_equal_ground_truth(spec: NetSpec, sizes: tuple[int, int]) -> None:
    wide, base = _pair(spec, sizes)
    report = analyze(wide, base=base)
    assert _diff(report, ground_truth_roles(wide, base, FREE_FANS)) == {}


def _materialized(spec: NetSpec, width: int, seed: int = 0) -> RandomNet:
    torch.manual_seed(seed)
    return RandomNet(spec, width)


@given(spec=net_specs(), sizes=widths)
def test_apply_at_base_width_changes_nothing(spec: NetSpec, sizes: tuple[int, int]) -> None:
    """Outputs and the first AdamW step equal the original's; applying again is refused."""
    base_width = sizes[1]
    model = _materialized(spec, base_width)
    twin = copy.deepcopy(model)
    inputs = model.example_inputs()
    muprewrite.apply(model, inputs, base=_materialized(spec, base_width, seed=1),
                     heads=spec.heads)  # type: ignore[arg-type]
    assert torch.equal(model(*inputs), twin(*inputs))
    ours = torch.optim.AdamW(muprewrite.param_groups(model, lr=1e-2, weight_decay=0.1))
    plain = torch.optim.AdamW([p for p in twin.parameters() if p.requires_grad], lr=1e-2,
                              weight_decay=0.1)
    for m, opt in ((model, ours), (twin, plain)):
        m(*inputs).square().mean().backward()
        opt.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), name
    with pytest.raises(muprewrite.MuprewriteError, match="already rewritten"):
        muprewrite.apply(model, inputs, base=twin)


@given(spec=net_specs(), sizes=widths)
def test_applying_twice_is_refused_at_any_width(spec: NetSpec, sizes: tuple[int, int]) -> None:
    wide, base = (_materialized(spec, w) for w in sizes)
    inputs = wide.example_inputs()
    muprewrite.apply(wide, inputs, base=base)
    before = {n: p.clone() for n, p in wide.named_parameters()}
    out = wide(*inputs)
    with pytest.raises(muprewrite.MuprewriteError, match="already rewritten"):
        muprewrite.apply(wide, inputs, base=base)
    assert all(torch.equal(p, before[n]) for n, p in wide.named_parameters())
    assert torch.equal(wide(*inputs), out)


@given(spec=net_specs(), sizes=widths)
def test_apply_equals_mup_written_by_hand(spec: NetSpec, sizes: tuple[int, int]) -> None:
    """The rewritten forward equals the same net with muP written into its code: logits x
    sqrt(d_base)/d_head relative to 1/sqrt(d_head), the readout's input x base/width."""
    wide, base = _materialized(spec, sizes[0]), _materialized(spec, sizes[1], seed=1)
    reference = copy.deepcopy(wide)
    reference.readout_factor = sizes[1] / sizes[0]
    for module in reference.modules():
        if isinstance(module, Attention):
            base_d_head = sizes[1] // (module.heads if spec.heads == "fixed" else
                                        sizes[1] // HEAD_DIM)
            module.logit_factor = (module.d_head / base_d_head) ** -0.5
    inputs = wide.example_inputs()
    muprewrite.apply(wide, inputs, base=base, init=False)
    torch.testing.assert_close(wide(*inputs), reference(*inputs), rtol=1e-5, atol=1e-6)


@given(spec=net_specs(), sizes=widths, seed=st.integers(0, 2 ** 16))
def test_roles_invariant_to_renaming_and_registration_order(spec: NetSpec,
                                                           sizes: tuple[int, int],
                                                           seed: int) -> None:
    wide, base = _pair(spec, sizes)
    single, measured = analyze(wide, heads=spec.heads), analyze(wide, base=base)  # type: ignore[arg-type]
    mapping = rename_tree([wide, base], seed)
    single_renamed = analyze(wide, heads=spec.heads)  # type: ignore[arg-type]
    measured_renamed = analyze(wide, base=base)
    assert any(old != new for old, new in mapping.items())
    for old, new in mapping.items():
        assert single_renamed[new].role == single[old].role, (old, new)
        assert measured_renamed[new].role == measured[old].role, (old, new)


@given(spec=net_specs(), sizes=widths)
def test_emitted_source_equals_apply(spec: NetSpec, sizes: tuple[int, int]) -> None:
    """random_arch.py plus a class fixing the drawn spec, emitted as source, equals apply:
    same parameters after seeding, same outputs, same first AdamW step (float64)."""
    source = Path(__file__).with_name("random_arch.py").read_text() + (
        "\n\nclass Net(RandomNet):\n    def __init__(self, width: int) -> None:\n"
        f"        super().__init__({spec!r}, width)\n")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "net.py"
        path.write_text(source)
        emission = emit(path, f"Net(width={sizes[0]})", f"Net(width={sizes[1]})")
        out = Path(folder) / "net_mup.py"
        out.write_text(emission.source)
        emitted = import_without_muprewrite(out)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        base = _materialized(spec, sizes[1], seed=0)  # seed 0: the emitted MUP_BASE_SEED
        runtime = muprewrite.apply(_materialized(spec, sizes[0], seed=1), base=base)
        torch.manual_seed(1)
        model = emitted.Net(sizes[0])
        for (name, a), b in zip(runtime.state_dict().items(), model.state_dict().values()):
            assert torch.equal(a, b), name
        inputs = runtime.example_inputs()
        torch.testing.assert_close(model(*inputs), runtime(*inputs), rtol=1e-12, atol=1e-12)
        for m, groups in ((runtime, muprewrite.param_groups(runtime, lr=1e-2, weight_decay=0.1)),
                          (model, emitted.mup_param_groups(model, lr=1e-2, weight_decay=0.1))):
            opt = torch.optim.AdamW(groups)
            m(*inputs).square().mean().backward()
            opt.step()
        torch.testing.assert_close(model(*inputs), runtime(*inputs), rtol=1e-12, atol=1e-12)
    finally:
        torch.set_default_dtype(previous)
