"""Tools that study models and techniques without being techniques themselves.

:mod:`~kerascomp.analysis.inspect` tells what kerascomp sees in a model file
(format, layers each technique can handle, ops that reach LiteRT);
:mod:`~kerascomp.analysis.sweep` distils over a grid of settings (how much
smaller can the student be?), locally or as Ray Tune trials.
"""
