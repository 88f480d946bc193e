"""Helpers for assertions on RunResults."""


def describe(res) -> str:
    """A one-line summary of a result for assertion messages: verdict, outcome, first divergence."""
    d = res.first_divergence
    where = f"step {d.step} rank {d.rank} attempt {d.attempt} fields {d.fields} ({d.note})" if d else "none"
    return f"{res.verdict}/{res.outcome}: {res.message}; first divergence: {where}"
