"""Built-in scenarios: training scripts the harness kills and resumes (``harness run <name>``).

The repository's top-level folder ``scenarios/`` installs as the package ``harness.scenarios``
(pyproject.toml ``package-dir``): nothing named ``scenarios`` lands in site-packages, and scenarios
import each other as ``harness.scenarios.<name>``.

Every scenario is a module runnable by torchrun (``torchrun --nproc-per-node 2 -m harness.scenarios.default``)
and by the harness (runpy as ``__main__``). All use the reference checkpointer (harness.checkpoint);
the shared loop and its hook points are in ``scenarios/_common.py``. ``BUILTIN`` maps each name
to a one-line description (``harness scenarios`` lists it); ``harness.scenarios.buggy.EXPECTED`` holds
the first divergence each buggy variant must produce.

``_catalog.py`` holds the table of names (``BUILTIN``). What the scenarios cost per trial is measured by
``bench/trial_speed.py`` and ``bench/trial_profile.py`` (results in the docs' benchmarks page).
"""

from harness.scenarios._catalog import BUILTIN

__all__ = ["BUILTIN"]
