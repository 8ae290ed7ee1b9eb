"""Stage 3 — analysis: parameter uses, attention sites, roles, and the Report value."""

__all__: list[str] = []
