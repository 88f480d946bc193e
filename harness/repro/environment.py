"""The environment a repro file records: library versions and the determinism-relevant variables."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Environment:
    """Library versions and determinism-relevant variables (the baseline cache key's environment)."""

    python: str
    torch: str
    numpy: str
    harness: str
    variables: dict = field(default_factory=dict)

    @classmethod
    def current(cls) -> Environment:
        """This process's environment, as the baseline cache key sees it (``baseline.key_inputs``)."""
        from harness.engine.baseline import key_inputs
        from harness.engine.target import Target

        inputs = key_inputs(Target(name="-", module="-"), nproc=1, backend="-", script_args=(), runs=1)
        v = inputs["versions"]
        variables = {k: str(val) for k, val in sorted(inputs["env"].items()) if val is not None}
        return cls(python=v["python"], torch=v["torch"], numpy=v["numpy"], harness=v["harness"], variables=variables)

    def differences(self, here: Environment) -> list[str]:
        """One line per field that differs: ``environment.torch: recorded '2.4.0', here '2.13.0'``."""
        out = []
        for name in ("python", "torch", "numpy", "harness"):
            a, b = getattr(self, name), getattr(here, name)
            if a != b:
                out.append(f"environment.{name}: recorded {a!r}, here {b!r}")
        for k in sorted(self.variables.keys() | here.variables.keys()):
            a, b = self.variables.get(k), here.variables.get(k)
            if a != b:
                show = lambda x: "(unset)" if x is None else repr(x)  # noqa: E731
                out.append(f"environment.variables.{k}: recorded {show(a)}, here {show(b)}")
        return out

    def to_json(self) -> dict:
        return {"python": self.python, "torch": self.torch, "numpy": self.numpy, "harness": self.harness,
                "variables": dict(self.variables)}
