"""Stage: capture. Run the model once under ``torch.export`` and name what its graph holds.

``export.py`` (the capture and its parameter names), ``inline.py`` (export's wrapper ops
spliced back), ``input_sets.py`` (one set of example inputs per path of the forward),
``source.py`` (the user's file:line of a node), ``unwrap.py`` (the model inside compile / DDP wrappers).
"""
