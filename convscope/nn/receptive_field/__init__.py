"""Receptive fields: which model-input pixels can influence a feature position.

Geometry and conventions: :mod:`~convscope.nn.receptive_field.geometry`
(:class:`ReceptiveField`: size, stride, start in model-input pixels).

Two ways to get it:

- :func:`analytic_receptive_fields` (:mod:`.analytic`, op rules in :mod:`.rules`) traces
  the model with ``torch.fx`` and propagates (size, stride, start) through every node.
- :func:`measured_receptive_field` (:mod:`.measured`) backpropagates from one feature
  position through a linearised copy of the model and reads the box of input pixels with
  a nonzero gradient.

:func:`receptive_fields` uses the analytic route and measures only the layers it cannot
analyse (an untraceable model, or a layer downstream of an op without a rule). No
function here leaves the model modified (mode, weights and hooks are as before; hooks
never fire).
"""

from convscope.nn.receptive_field.analytic import analytic_receptive_fields
from convscope.nn.receptive_field.fields import receptive_fields
from convscope.nn.receptive_field.geometry import ReceptiveField
from convscope.nn.receptive_field.measured import measured_receptive_field

__all__ = [
    "ReceptiveField",
    "analytic_receptive_fields",
    "measured_receptive_field",
    "receptive_fields",
]
