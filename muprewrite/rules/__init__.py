"""Stage: the parametrization rules (the TOML files of the top-level ``rules/`` folder) and
the base hyperparameters tuned on a proxy.

``rule.py`` holds what a rule is, ``load.py`` reads and validates a file into one,
``checks.py`` checks what it claims, ``hparams.py`` the nine base hyperparameters and their
cards. The stage imports nothing of muprewrite but ``errors``.
"""

from .checks import expected_weight_decay
from .load import available_rules, load_rule
from .rule import (
    KINDS,
    MAX_EXPONENT,
    MAX_RULE_BYTES,
    NAME_PATTERN,
    QUANTITIES,
    ROLES,
    RULES_DIR,
    Exponents,
    MuonRow,
    Rule,
    RuleError,
    Scaling,
)

__all__ = ["RuleError", "Exponents", "Scaling", "MuonRow", "Rule", "load_rule",
           "available_rules", "expected_weight_decay", "RULES_DIR", "ROLES", "QUANTITIES",
           "KINDS", "MAX_EXPONENT", "MAX_RULE_BYTES", "NAME_PATTERN"]
