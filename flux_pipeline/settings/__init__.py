"""Every setting of the project, each declared once with its default, bound and help text.

A setting is a field of a :class:`Settings` model (the engine's :class:`EngineConfig`, the
``segmind`` and ``storage`` resources' fields, the emulator's :class:`EmulatorSettings` and its
CLI flags) or an environment variable of :mod:`flux_pipeline.settings.environment`. From that
one declaration come the Dagster resource's fields (``resources/`` subclass the core's models),
the emulator's argparse flags (:mod:`~flux_pipeline.settings.flags`), the validation and its
messages naming the field or variable, and the reference page ``docs/CONFIGURATION.md``.

How to add a setting:

1. Declare it once, beside its neighbours:

   - a field of a model: ``history_grace: float = setting(60.0, "Seconds ...", ge=0)`` in
     ``EngineOptions`` (``segmind/config.py``: the engine and the ``segmind`` resource get it),
     or ``blank_rate: float = setting(0.0, "Share of ...", ge=0, le=1, metavar="P")`` in
     ``EmulatorSettings`` (``emulator/settings.py``: ``--blank-rate P`` is derived from the
     name; ``flag=`` names another);
   - an environment variable: ``FLUX_BLANK_LUMA_STD: Final[Variable[float]] = Variable(
     "FLUX_BLANK_LUMA_STD", float, 2.0, "...", ge=0, le=255)`` in
     :mod:`flux_pipeline.settings.environment` (the page lists it by itself).

2. Use it: ``config.history_grace``, ``settings.blank_rate``, ``FLUX_BLANK_LUMA_STD.read()``
   where it applies (read each time: a value past its bound or not a number raises naming
   the variable). Cross-field rules go in the model's ``model_validator``, naming the field.

3. Regenerate the reference page: ``python -m flux_pipeline.commands.config_docs``
   (``tests/settings/`` fails while the committed page is out of date).
"""

from flux_pipeline.settings.declare import Settings, ValueObject, setting
from flux_pipeline.settings.variables import Variable

__all__ = ["Settings", "ValueObject", "Variable", "setting"]
