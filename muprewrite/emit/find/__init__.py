"""Finding the sites in the user's source: what emission edits, and where.

``project.py`` (the user's files, each read and parsed once), ``places.py`` (a captured line
resolved to a project file), ``sites.py`` (the site types), ``locate.py`` (the readout and
attention sites of the plan), ``branches.py`` (the residual adds under a depth rule),
``readouts.py`` / ``attention.py`` (the same computations found by pattern in every method of
the classes concerned, so that paths no capture ran are edited too, or refused at their line;
``scan.py``: what a scan reports), ``importers.py`` (the project's files that import an edited
one).
"""
