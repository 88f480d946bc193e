"""Third-party checkpointing implementations as systems under test (``harness certify --sut NAME``).

Each adapter is a training script that runs the default scenario's logic (same data, model, AdamW,
warmup LR, gradient accumulation, checkpoint cadence: ``harness.scenarios._common``) but saves and
resumes with a third-party library, so that certificates of different SUTs compare side by side.
The module names start with ``_`` so that ``harness scenarios`` does not list them as built-in
scenarios; ``harness certify`` runs them by path (``harness run <path>`` replays a trial).

    _accelerate.py  HF Accelerate: Accelerator(cpu=True on CPU), save_state/load_state with automatic
                    checkpoint naming, mid-epoch resume with skip_first_batches (its documented pattern)
    _deepspeed.py   DeepSpeed: engine.save_checkpoint/load_checkpoint (client_state holds the counters)
    _torchdata.py   torchdata's StatefulDataLoader (with --num-workers 0 or 2) for the data position,
                    the reference checkpointer for everything else
    _points.py      probe points inside the libraries' saves (checkpoint.begin / write / committed)

The third-party libraries write no probe points of their own: ``_points.save_points`` wraps the
functions they write files with (``torch.save``, safetensors' ``save_file``), so a mid-save kill lands
between two files of a real save. This package imports nothing; ``harness.certify.matrix.SUT_SCENARIOS`` names the adapters.
"""

from __future__ import annotations
