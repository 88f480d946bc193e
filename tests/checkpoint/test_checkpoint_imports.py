"""The reference checkpointer depends on the rest of the harness only through `harness.probe` (for
`probe.point`), `harness.tensors` (the shared tensor helpers) and `harness.private_apis` (the list of
private torch/DeepSpeed APIs it relies on; standard library only), so it can be read, vendored and
tested on its own. Checked on the source with `ast`, lazy imports inside functions included."""

from __future__ import annotations

import ast
import os

import harness.tensors
from harness.checkpoint import files, state

from support import REPO as ROOT  # noqa: E402
CHECKPOINT = os.path.join(ROOT, "harness", "checkpoint")
ALLOWED_MODULES = {"harness.probe", "harness.tensors", "harness.private_apis"}  # `import X` / `from X import ...`
ALLOWED_FROM_HARNESS = {"probe", "tensors", "private_apis", "__version__"}  # `from harness import X`


def _violations(path: str) -> list[str]:
    with open(path) as f:
        module = ast.parse(f.read(), path)
    rel = os.path.relpath(path, ROOT)
    bad = []
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "harness" and alias.name not in ALLOWED_MODULES:
                    bad.append(f"{rel}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top != "harness":
                continue
            if node.module == "harness":
                bad += [f"{rel}:{node.lineno}: from harness import {a.name}" for a in node.names
                        if a.name not in ALLOWED_FROM_HARNESS]
            elif node.module not in ALLOWED_MODULES:
                bad.append(f"{rel}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            target = node.args[0].value
            if (name in ("import_module", "__import__") and isinstance(target, str)
                    and target.split(".")[0] == "harness" and target not in ALLOWED_MODULES):
                bad.append(f"{rel}:{node.lineno}: {name}({target!r})")
    return bad


def test_checkpointer_imports_only_probe_and_tensors_from_the_harness():
    sources = sorted(os.path.join(CHECKPOINT, n) for n in os.listdir(CHECKPOINT) if n.endswith(".py"))
    assert len(sources) >= 10, sources  # the walk sees the package
    bad = [v for path in sources for v in _violations(path)]
    assert not bad, ("harness.checkpoint may import from the harness only harness.probe, harness.tensors and "
                     "harness.private_apis:\n" + "\n".join(bad))


def test_the_rule_checker_catches_violations(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import harness.oracle\nfrom harness.probe.digest import digest\nfrom harness import faults\n"
                   "def f():\n    from harness.launch import spec\n    importlib.import_module('harness.engine')\n"
                   "import harness.probe\nfrom harness.tensors import tensor_bytes\nfrom harness import probe, __version__\n"
                   "from . import tree\nimport torch\n")
    bad = _violations(str(src))
    assert [b.split(":", 2)[1] for b in bad] == ["1", "2", "3", "5", "6"], bad


def test_checkpointer_uses_the_shared_tensor_helpers():
    assert files.tensor_bytes is harness.tensors.tensor_bytes
    assert state.unwrap_model is harness.tensors.unwrap_model
