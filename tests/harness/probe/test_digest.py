"""The digest's structure typing, key paths, exact JSON leaves and optimizer detail (harness/probe/digest.py)."""

import copy
import dataclasses
import json
import math
import struct
from collections import OrderedDict, namedtuple

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.probe import digest as D
from harness.probe import state_digest as S
from harness.probe.digest import Empty, digest, format_path, leaves, parse_path
from harness.probe.json_leaf import from_json_leaf, json_leaf


def nan_with(payload: int, sign: int = 0) -> float:
    return struct.unpack("<d", struct.pack("<Q", (sign << 63) | 0x7FF0000000000000 | payload))[0]


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


@dataclasses.dataclass
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Other:
    x: int
    y: int


@dataclasses.dataclass
class NoFields:
    pass


T = torch.arange(3.0)

# Pairs that the old digest (keys joined with '/', sorted by str(key), no container types, no empty
# containers) hashed the same.
SAME_UNDER_THE_OLD_DIGEST = [
    ({0: T}, {"0": T}),
    ((T,), [T]),
    ([T, T], {0: T, 1: T}),
    ({"a/b": 1}, {"a": {"b": 1}}),
    ({"a": {}}, {"a": []}),
    ({"a": {}}, {}),
    ({"a": []}, {"a": ()}),
    ({}, []),
    ({"x": 1, "y": {}}, {"x": 1}),
    ({1: "v"}, {True: "v"}),
    ({None: 1}, {"None": 1}),
    ({1.5: 1}, {"1.5": 1}),
    ({"": 1}, 1),
    (Point(1, 2), {"x": 1, "y": 2}),
    (Point(1, 2), Other(1, 2)),
    ({"state": {0: {"exp_avg": T}}}, {"state": {"0": {"exp_avg": T}}}),  # a JSON round trip of int keys
]

# str keys that look like the new tagged components, and other look-alikes of the new grammar.
LOOK_ALIKES = [
    ({1: "v"}, {True: "v"}),
    ({"#0": 1}, {0: 1}),
    ({"[0]": 1}, [1]),
    ({"(0)": 1}, (1,)),
    ({".x": 1, ".y": 2}, Point(1, 2)),
    ({"!None": 1}, {None: 1}),
    ({"!str:": 1}, {"": 1}),
    ({"%2F": 1}, {"/": 1}),
    ({"a%2Fb": 1}, {"a/b": 1}),
    ({"x": {"empty": "dict"}}, {"x": {}}),
]


@pytest.mark.parametrize("a, b", SAME_UNDER_THE_OLD_DIGEST + LOOK_ALIKES)
def test_distinct_structures_have_distinct_digests(a, b):
    assert digest(a) != digest(b)


def test_equal_structures_have_equal_digests_whatever_the_mapping_type_and_key_order():
    a = OrderedDict([("b", T), ("a", {1: 2.5, "z": [1, (2,)]})])
    b = {"a": {"z": [1, (2,)], 1: 2.5}, "b": T.clone()}
    assert digest(a) == digest(b)
    assert [p for p, _ in leaves(a)] == ["a/z/[0]", "a/z/[1]/(0)", "a/#1", "b"]


def test_paths_stay_readable_for_state_dicts():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3))
    assert [p for p, _ in leaves(model.state_dict())] == ["0.bias", "0.weight"]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 2)).sum().backward()
    opt.step()
    paths = [p for p, _ in leaves(opt.state_dict())]
    assert {"state/#0/exp_avg", "state/#1/step", "param_groups/[0]/lr", "param_groups/[0]/betas/(0)",
            "param_groups/[0]/params/[1]"} <= set(paths)


def test_empty_containers_are_leaves():
    assert list(leaves({})) == [("", Empty("dict"))]
    assert list(leaves({"a": [], "b": (), "c": {}, "d": NoFields()})) == [
        ("a", Empty("list")), ("b", Empty("tuple")), ("c", Empty("dict")),
        ("d", Empty(f"dataclass:{__name__}.NoFields"))]
    assert json.loads(json.dumps(Empty("list"))) == json_leaf(Empty("list")) == {"empty": "list"}


def test_key_path_grammar():
    tree = {"": 1, ".a": 2, "#0": 3, 0: 4, -3: 5, None: 6, True: 7, 1.5: 8, b"k": 9, "a/b%c": 10,
            "!x": 11, "[0]": 12, "(0)": 13, "x": [Point(1, 2), (3,)]}
    got = dict(leaves(tree))
    assert got == {
        "!str:": 1, "%2Ea": 2, "%230": 3, "#0": 4, "#-3": 5, "!None": 6, "!True": 7,
        "!float:3ff8000000000000": 8, "!bytes:6b": 9, "a%2Fb%25c": 10, "%21x": 11, "%5B0]": 12,
        "%280)": 13, "x/[0]/.x": 1, "x/[0]/.y": 2, "x/[1]/(0)": 3}
    assert parse_path("x/[1]/(0)") == [("dict", "x"), ("list", 1), ("tuple", 0)]
    assert parse_path("") == [] and format_path([]) == ""
    assert parse_path("a%2Fb%25c/#-3/.y/!float:3ff8000000000000") == [
        ("dict", "a/b%c"), ("dict", -3), ("field", "y"), ("dict", 1.5)]
    for bad in ["a//b", "#01", "#x", "[1", "[-0]", "%2ea", "a%2", ".", ".1a", "!nope", "!bytes:AB", "%41b", "/a"]:
        with pytest.raises(ValueError):
            parse_path(bad)


def test_dict_keys_that_cannot_be_written_are_refused_naming_the_path():
    with pytest.raises(D.DigestError, match=r"dict key of type .*at 'a/\[0\]'"):
        digest({"a": [{object(): 1}]})
    with pytest.raises(D.DigestError, match="two keys written '!float:7ff8000000000000'"):
        digest({float("nan"): 1, float("nan"): 2})
    with pytest.raises(D.DigestError, match=r"object at 'x/\[1\]'"):
        digest({"x": [1, object()]})


# -- the property: digests are equal iff the structures are equal, type-exactly ---------------------------
def canon(x):
    """A type-exact canonical form: floats by their bits, tensors by dtype, shape and bytes."""
    if isinstance(x, torch.Tensor):
        return ("tensor", str(x.dtype), tuple(x.shape), x.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    if type(x) is float:
        return ("float", bits(x))
    if type(x) in (type(None), bool, int, str, bytes):
        return (type(x).__name__, x)
    if type(x) is dict:
        return ("dict", frozenset((canon(k), canon(v)) for k, v in x.items()))
    if type(x) in (list, tuple):
        return (type(x).__name__, tuple(canon(v) for v in x))
    raise AssertionError(type(x))


FLOATS = st.sampled_from([0.0, -0.0, 1.0, -1.5, math.inf, -math.inf, float("nan"), nan_with(1), nan_with(1, 1),
                          nan_with(0x8000000000001)]) | st.floats(allow_nan=True)
TENSORS = st.sampled_from([torch.zeros(2), torch.zeros(2, dtype=torch.int32), torch.zeros(1, 2), torch.tensor(0.0),
                           torch.tensor([0.0, -0.0]), torch.zeros(0), torch.tensor([True]), torch.ones(2)])
SCALAR_LEAVES = st.none() | st.booleans() | st.integers(-2, 2) | FLOATS | st.sampled_from(["", "0", "a", "#0", "[0]"]) \
    | st.sampled_from([b"", b"0", b"a"])
LEAVES = SCALAR_LEAVES | TENSORS
STR_KEYS = st.sampled_from(["", "0", "1", "a", "b", "a/b", "%", "%2F", "#0", "[0]", "(0)", ".a", "!None", "!str:",
                            "x y", "é"]) | st.text(max_size=4)
MIXED_KEYS = STR_KEYS | st.integers(-2, 2) | st.sampled_from([None, True, False, 1.5, -0.0, b"k", nan_with(3)])


def structures(keys):
    return st.recursive(
        LEAVES,
        lambda inner: st.lists(inner, max_size=3) | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(keys, inner, max_size=3),
        max_leaves=8)


STRUCTURES = structures(STR_KEYS) | structures(st.integers(0, 2)) | structures(MIXED_KEYS)


def check_paths(obj):
    got = list(leaves(obj))
    paths = [p for p, _ in got]
    assert len(set(paths)) == len(paths)
    for path, leaf in got:
        assert format_path(parse_path(path)) == path
        node = obj
        for kind, key in parse_path(path):
            if kind == "dict":
                node = node[next(k for k in node if D.format_component("dict", k) == D.format_component("dict", key))]
            else:
                assert kind == type(node).__name__
                node = node[key]
        assert node is leaf or (isinstance(leaf, Empty) and len(node) == 0 and type(node).__name__ == leaf.kind)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STRUCTURES, min_size=2, max_size=6))
def test_digests_are_equal_iff_structures_are_equal(objs):
    for obj in objs:
        check_paths(obj)
    digests = [digest(o) for o in objs]
    forms = [canon(o) for o in objs]
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            assert (digests[i] == digests[j]) == (forms[i] == forms[j]), (objs[i], objs[j])


@settings(max_examples=200, deadline=None)
@given(STRUCTURES)
def test_a_digest_differs_from_its_structure_perturbed(obj):
    """The nearest neighbours: the same structure with one container retyped or one key retyped."""
    def variants(x):
        if isinstance(x, (list, tuple)):
            yield (tuple(x) if isinstance(x, list) else list(x))
            if x:
                yield dict(enumerate(x))
            for i, v in enumerate(x):
                for w in variants(v):
                    yield type(x)(x[:i]) + type(x)([w]) + type(x)(x[i + 1:])
        elif isinstance(x, dict):
            if not x:
                yield []
            for k, v in x.items():
                other = str(k) if not isinstance(k, str) else (int(k) if k.isascii() and k.isdigit() else k + "/")
                if other not in x:
                    yield {**{kk: vv for kk, vv in x.items() if kk is not k}, other: v}
                for w in variants(v):
                    yield {**x, k: w}
    d = digest(obj)
    assert digest(copy.deepcopy(obj)) == d
    for v in variants(obj):
        if canon(v) != canon(obj):
            assert digest(v) != d, (obj, v)


# -- exact JSON leaves ---------------------------------------------------------------------------------
JSON_LEAVES = SCALAR_LEAVES | st.integers() | st.text() | st.binary(max_size=8) \
    | st.sampled_from([Empty("dict"), Empty("list"), Empty("tuple")])


@given(JSON_LEAVES)
def test_json_leaf_round_trips_exactly(value):
    back = from_json_leaf(json.loads(json.dumps(json_leaf(value), allow_nan=False)))
    assert type(back) is type(value)
    if isinstance(value, float):
        assert bits(back) == bits(value)
    else:
        assert back == value


def test_json_leaf_forms():
    assert json_leaf(1) == 1 and json_leaf(True) is True and json_leaf(None) is None and json_leaf("a") == "a"
    assert json.dumps(json_leaf(1.0)) == "1.0" and type(json.loads(json.dumps(json_leaf(1.0)))) is float
    assert json.dumps(json_leaf(-0.0)) == "-0.0"
    assert json_leaf(float("nan")) == {"float64": "7ff8000000000000"}
    assert json_leaf(nan_with(1)) == {"float64": "7ff0000000000001"}
    assert json_leaf(-math.inf) == {"float64": "fff0000000000000"}
    assert json_leaf(b"\x00\xff") == {"bytes": "00ff"}
    assert json_leaf(Empty("dict")) == {"empty": "dict"}
    assert json_leaf(np.float64(0.5)) == 0.5 and type(json_leaf(np.float64(0.5))) is float
    with pytest.raises(D.DigestError):
        json_leaf(torch.zeros(1))
    with pytest.raises(ValueError):
        from_json_leaf({"float64": "zz"})


# -- optimizer detail ------------------------------------------------------------------------------------
def adam_after_one_step(lr=1e-3):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.95))
    model(torch.randn(5, 3)).pow(2).mean().backward()
    opt.step()
    return model, opt


def test_optimizer_record_groups_hold_hyperparameters_exactly():
    model, opt = adam_after_one_step(lr=1e-3)
    rec = S.optimizer_record(opt, model)
    assert rec["digest"] == S.optimizer_digest(opt) == digest(opt.state_dict())
    (group,) = rec["groups"]
    assert type(group["lr"]) is float and bits(group["lr"]) == bits(1e-3)
    assert group["betas/(0)"] == 0.9 and group["betas/(1)"] == 0.95 and group["amsgrad"] is False
    assert "params" not in group and not any(k.startswith("params") for k in group)
    assert json.loads(json.dumps(rec)) == rec
    opt.param_groups[0]["lr"] = 5e-4
    assert S.optimizer_record(opt, model)["groups"][0]["lr"] == 5e-4


def test_optimizer_record_state_entries_by_parameter_name():
    model, opt = adam_after_one_step()
    rec = S.optimizer_record(opt, model)
    assert set(rec["state"]) == {f"{p} {k}" for p in ("0.weight", "0.bias", "1.weight", "1.bias")
                                 for k in ("step", "exp_avg", "exp_avg_sq")}
    opt.state[model[1].weight]["exp_avg"][0, 1] += 1e-3
    after = S.optimizer_record(opt, model)
    assert {k for k in rec["state"] if rec["state"][k] != after["state"][k]} == {"1.weight exp_avg"}
    assert after["digest"] != rec["digest"]
    assert after["groups"] == rec["groups"]


def test_optimizer_record_without_a_model_uses_the_state_keys():
    model, opt = adam_after_one_step()
    rec = S.optimizer_record(opt)
    assert "#3 exp_avg" in rec["state"] and "#0 step" in rec["state"] and len(rec["state"]) == 12
    other = torch.nn.Linear(1, 1)  # a model that holds none of the optimizer's parameters
    assert S.optimizer_record(opt, other)["state"] == rec["state"]


def test_optimizer_record_state_entries_are_the_records_of_their_leaves():
    """Each entry digest hashes the records that digest(state_dict) hashes under that entry's path, for
    any state layout: str keys (FQNs), nested or non-dict values, numpy scalars, empty containers."""
    import xxhash

    p = torch.nn.Parameter(torch.ones(2))

    class Opt:
        param_groups = [{"params": [p]}]

        def state_dict(self):
            return {"state": {"w": {"exp_avg": torch.arange(3.0), "step": 3, "nested": {"x": [1, (2.5,)]},
                                    "np": np.float32(2), "t": torch.ones(2, 3).t(), "e": []},
                              "#b": [torch.ones(1)], "": {}, "d": torch.zeros(1)},
                    "param_groups": [{"lr": 0.1, "params": ["w", "#b", "", "d"]}, {"params": [0, 1]},
                                     {"params": [0, True]}, {}], "extra": (1, None)}

    model = torch.nn.Module()
    model.layer = torch.nn.Module()
    model.layer.weight = p
    rec = S.optimizer_record(Opt(), model)
    assert rec["digest"] == digest(Opt().state_dict())
    assert S.optimizer_record(Opt(), model) == rec  # again, with the cached key orders and int lists
    by_entry: dict = {}
    for path, hpath, leaf in D._walk(Opt().state_dict()):
        parts = path.split("/")
        if parts[0] == "state":
            name = "layer.weight" if parts[1] == "w" else parts[1]
            entry = f"{name} {parts[2]}" if parts[1] == "w" else name
            by_entry.setdefault(entry, []).append(D._record(path, hpath, leaf))
    assert rec["state"] == {e: xxhash.xxh3_128(b"".join(r)).hexdigest() for e, r in by_entry.items()}
    assert set(rec["state"]) == {"layer.weight exp_avg", "layer.weight step", "layer.weight nested",
                                 "layer.weight np", "layer.weight t", "layer.weight e", "%23b", "!str:", "d"}


def test_optimizer_record_before_any_step_and_with_a_tensor_lr():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=torch.tensor(0.25))
    rec = S.optimizer_record(opt, model)
    assert rec["state"] == {} and rec["digest"] == digest(opt.state_dict())
    assert rec["groups"][0]["lr"] == {"dtype": "float32", "shape": [], "hex": struct.pack("<f", 0.25).hex(),
                                      "value": 0.25}
    empty = dict(leaves(opt.state_dict()))["state"]
    assert isinstance(empty, Empty) and empty.kind == "dict"


class NamedStateOptimizer:
    """An optimizer whose state_dict is keyed by parameter names (get_optimizer_state_dict style)."""

    def __init__(self, opt, model):
        self.opt, self.names = opt, {id(p): n for n, p in model.named_parameters()}
        self.param_groups = opt.param_groups

    def state_dict(self):
        sd = self.opt.state_dict()
        order = [self.names[id(p)] for g in self.opt.param_groups for p in g["params"]]
        return {"state": {order[i]: v for i, v in sd["state"].items()},
                "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in sd["param_groups"]]}


def test_optimizer_record_with_name_keyed_state():
    model, opt = adam_after_one_step()
    named = NamedStateOptimizer(opt, model)
    assert "0.weight exp_avg" in S.optimizer_record(named)["state"]
    assert set(S.optimizer_record(named, model)["state"]) == set(S.optimizer_record(opt, model)["state"])
    assert "state/0.weight/exp_avg" in dict(leaves(named.state_dict()))


def test_optimizer_state_held_for_tensors_outside_its_param_groups_is_recorded():
    """DeepSpeed ZeRO-3 lists its flat fp32 partitions in the torch optimizer's param_groups during a step
    only: between steps the state is keyed by tensors that state_dict() cannot number (KeyError)."""
    flat = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.Adam([flat], lr=0.1)
    flat.grad = torch.full((4,), 0.5)
    opt.step()
    listed = torch.nn.Parameter(torch.zeros(2))
    opt.param_groups[0]["params"] = [listed]  # what ZeRO-3 leaves between steps (it leaves [])
    with pytest.raises(KeyError):
        opt.state_dict()
    assert S.loose_state_tensors(opt) == [flat]
    sd = S.optimizer_state_dict(opt)
    assert sd["param_groups"][0]["params"] == [0] and list(sd["state"]) == [1]  # numbered after the listed
    assert torch.equal(sd["state"][1]["exp_avg"], opt.state[flat]["exp_avg"])
    rec = S.optimizer_record(opt)
    assert rec["digest"] == S.optimizer_digest(opt) == digest(sd) and "#1 exp_avg" in rec["state"]
    before = rec["state"]["#1 exp_avg"]
    opt.state[flat]["exp_avg"].add_(1)
    assert S.optimizer_record(opt)["state"]["#1 exp_avg"] != before  # the loose state is compared


def test_a_zero3_parameter_is_digested_as_its_partition():
    full, part = torch.nn.Parameter(torch.empty(0)), torch.arange(3.0)
    full.ds_tensor = part  # DeepSpeed ZeRO-3: empty outside forward, this rank's slice in ds_tensor
    model = torch.nn.Module()
    model.w = full
    sd = S.model_state_dict(model)
    assert torch.equal(sd["w"], part)
    assert digest({"w": full}) == digest({"w": part}) != digest({"w": torch.empty(0)})
    part[0] = 7.0
    assert digest(S.model_state_dict(model)) != digest(sd | {"w": torch.arange(3.0)})


def test_a_model_whose_state_dict_takes_no_arguments_is_digested_through_it():
    class Gathered(torch.nn.Module):  # a wrapper presenting other tensors than its parameters
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def state_dict(self):
            return {"full": torch.arange(4.0)}

    assert list(S.model_state_dict(Gathered())) == ["full"]


def test_old_names_are_still_importable():
    from harness import tensors

    assert D.tensor_bytes is tensors.tensor_bytes and D.plain_tensor is tensors.plain_tensor
    assert D.unwrap_model is tensors.unwrap_model and D._is_tensor is tensors.is_tensor
    assert D._is_ndarray(np.zeros(1)) and not D._is_ndarray([0])


def test_namedtuples_and_sizes_are_tuples():
    P = namedtuple("P", "a b")
    assert digest(P(1, 2)) == digest((1, 2)) != digest([1, 2])
    assert digest(torch.Size([2, 3])) == digest((2, 3))
