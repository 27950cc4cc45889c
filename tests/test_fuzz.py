"""Fuzzed inputs: configs, .npz files, image folders, .keras archives and .tflite files that are not what they
claim to be.

The contract: a file is read, or refused with one line (a KerascompError,
printed by the CLI as ``Error: ...``); never a traceback, a hang or a dead
process. Hypothesis draws the cases: a fixed-seed quick profile here, a longer
one with ``KERASCOMP_FUZZ=long`` (see conftest.py); ``--hypothesis-show-statistics``
lists how many cases each test tried and how many were refused or read.
"""

import io
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import event, given
from hypothesis import strategies as st

from kerascomp.data import load_data
from kerascomp.errors import KerascompError
from kerascomp.pipeline import load_config

SMOKE = (Path(__file__).parents[1] / "configs" / "smoke.yaml").read_bytes()
KEYS = ("seed", "data", "spec", "val_fraction", "budget", "max_drop", "teacher", "model", "args", "train", "epochs",
        "stages", "prune", "qat", "convert", "bench", "models", "quantize", "name", "sparsity", "summary", "baseline",
        "threads", "runs", "path", "../x", "task")


def _read_or_refused(read, path: Path) -> None:
    """``read(path)`` returns, or raises a one-line KerascompError; anything else fails the test."""
    try:
        read(path)
    except KerascompError as error:
        assert "\n" not in str(error), str(error)
        event("refused")
    else:
        event("read")


def _mutated(data, source: bytes) -> bytes:
    """``source`` with 1 to 16 bytes overwritten at uniform places (a drawn seed places them: Hypothesis's own
    integers lean to the file's first bytes, its header)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    raw = np.frombuffer(source, dtype=np.uint8).copy()
    count = data.draw(st.integers(1, 16), label="bytes changed")
    raw[rng.integers(0, len(raw), count)] = rng.integers(0, 256, count)
    return raw.tobytes()


def _write(content: bytes, suffix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="kerascomp-fuzz-")) / f"case{suffix}"
    path.write_bytes(content)
    return path


@given(st.data())
def test_a_mutated_config_is_read_or_refused_in_one_line(data):
    _read_or_refused(load_config, _write(_mutated(data, SMOKE), ".yaml"))


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=True),
                     st.text(max_size=12), st.sampled_from(KEYS))
_documents = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5), max_leaves=20)


@given(_documents)
def test_any_yaml_document_is_read_or_refused_in_one_line(document):
    _read_or_refused(load_config, _write(yaml.safe_dump(document).encode(), ".yaml"))


def test_a_yaml_tag_that_would_build_an_object_is_refused():
    path = _write(b"seed: !!python/object/apply:os.system ['echo owned']\n", ".yaml")
    with pytest.raises(KerascompError, match="not valid YAML .*could not determine a constructor"):
        load_config(path)


def _npz(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


VALID_NPZ = _npz({"x": np.arange(40 * 64, dtype=np.uint8).reshape(40, 8, 8), "y": np.arange(40) % 4})


@given(st.data())
def test_a_mutated_npz_is_read_or_refused_in_one_line(data):
    _read_or_refused(load_data, _write(_mutated(data, VALID_NPZ), ".npz"))


_dtypes = st.sampled_from(["uint8", "int64", "float32", "float16", "bool", "complex64", "<U2", "object"])
_shapes = st.lists(st.integers(0, 9), min_size=0, max_size=4).map(tuple)


@st.composite
def _arrays(draw):
    arrays = {}
    for key in draw(st.lists(st.sampled_from(["x", "y", "x_train", "y_train", "x_test", "y_test", "y_a", "y_b",
                                              "classes"]), min_size=1, max_size=5, unique=True)):
        dtype, shape = draw(_dtypes), draw(_shapes)
        values = np.random.default_rng(len(arrays)).integers(0, 4, size=shape)
        arrays[key] = values.astype(object) if dtype == "object" else values.astype(dtype)
    return arrays


@given(_arrays())
def test_an_npz_of_any_arrays_is_read_or_refused_in_one_line(arrays):
    _read_or_refused(load_data, _write(_npz(arrays), ".npz"))


@given(data=st.data())
def test_a_mutated_tflite_is_run_or_refused_by_predict_and_never_kills_it(data, fuzz_tflite, capsys):
    """A file that crashes LiteRT (a segfault, an allocation the OOM killer ends) crashes predict's trial run in
    a child process: predict itself answers 0, or 1 with one Error line."""
    from kerascomp.cli import main

    path = _write(_mutated(data, fuzz_tflite), ".tflite")
    np.savez(path.with_suffix(".npz"), x=np.zeros((1, 8, 8, 1), np.uint8))
    code = main(["predict", str(path), str(path.with_suffix(".npz"))])
    err = capsys.readouterr().err
    assert code == 0 or code == 1 and err.startswith("Error:") and len(err.strip().splitlines()) == 1, err
    event("ran" if code == 0 else "crashed its trial run" if "crashed the LiteRT" in err else "refused")


def test_a_tflite_whose_dimensions_ask_for_gigabytes_is_refused_before_any_allocation(fuzz_tflite):
    """A damaged dimension would make the interpreter ask for terabytes and the OOM killer end the process."""
    import struct

    from ai_edge_litert import schema_py_generated as schema

    from kerascomp import runtime

    tensor = schema.Model.GetRootAs(fuzz_tflite, 0).Subgraphs(0).Tensors(0)
    shape_at = tensor._tab.Vector(tensor._tab.Offset(4))  # the first tensor's shape vector (vtable slot 4)
    raw = bytearray(fuzz_tflite)
    struct.pack_into("<i", raw, shape_at + 4, 1 << 30)  # its second dimension: 2**30
    with pytest.raises(KerascompError, match=r"declares a tensor of shape \(1, 1073741824, 8, 1\)"):
        runtime.load(_write(bytes(raw), ".tflite"))


def _png(value: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@given(data=st.data())
def test_an_image_folder_with_a_damaged_file_is_read_or_refused_naming_the_file(data):
    """TensorFlow's decoder says "Invalid PNG data, size 134" and names no file; the refusal must name it."""
    root = Path(tempfile.mkdtemp(prefix="kerascomp-fuzz-"))
    files = [root / name / f"{i}.png" for name in ("a", "b") for i in range(3)]
    for i, path in enumerate(files):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(_png(40 * i))
    victim = data.draw(st.sampled_from(files), label="file")
    how = data.draw(st.sampled_from(["truncated", "mutated", "text"]), label="damage")
    raw = victim.read_bytes()
    victim.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1), label="kept bytes")] if how == "truncated"
                       else _mutated(data, raw) if how == "mutated" else b"not an image\n")
    event(how)
    try:
        load_data(str(root), val_fraction=0.2)
    except KerascompError as error:
        assert "\n" not in str(error) and str(error).startswith(f"cannot read image {victim}:"), str(error)
        event("refused")
    else:
        event("read")


# integers up to 2**16: a layer declared with 2**31 units or filters is refused too, after 10 s of failing allocation
_JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2, 2**16), st.floats(allow_nan=True), st.text(max_size=8),
                         st.sampled_from(["Lambda", "Dense", "Functional", "Sequential", "keras.layers", "relu",
                                          "float16", "__main__", "builtins"]),
                         st.lists(st.integers(-1, 9), max_size=3), st.just({}))


def _nodes(tree, path=()):
    """Every (path, value) of a JSON tree: where a mutation can land."""
    yield path, tree
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        yield from _nodes(value, (*path, key))


def _replaced(tree, path, value):
    if not path:
        return value
    copy = dict(tree) if isinstance(tree, dict) else list(tree)
    copy[path[0]] = _replaced(tree[path[0]], path[1:], value)
    return copy


@given(data=st.data())
def test_a_keras_archive_with_a_mutated_config_or_weights_is_loaded_or_refused_in_one_line(data, fuzz_keras):
    """Every member of the zip kept, one of them changed: a value anywhere in config.json (a class name, a shape,
    a dtype, a module), bytes of the weights, or bytes of the archive itself."""
    from kerascomp.saving import load

    with zipfile.ZipFile(io.BytesIO(fuzz_keras)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    target = data.draw(st.sampled_from(["config.json", "model.weights.h5", "archive"]), label="member")
    event(target)
    if target == "config.json":
        config = json.loads(members[target])
        path, _ = data.draw(st.sampled_from(list(_nodes(config))), label="where")
        members[target] = json.dumps(_replaced(config, path, data.draw(_JSON_VALUES, label="value"))).encode()
    elif target == "model.weights.h5":
        members[target] = _mutated(data, members[target])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    content = _mutated(data, buffer.getvalue()) if target == "archive" else buffer.getvalue()
    _read_or_refused(load, _write(content, ".keras"))


def test_a_keras_archive_whose_metadata_fails_its_checksum_is_refused_in_one_line(fuzz_keras):
    """Found by the long profile: zipfile's BadZipFile ("Bad CRC-32 for file 'metadata.json'") escaped."""
    from kerascomp.saving import load

    with zipfile.ZipFile(io.BytesIO(fuzz_keras)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # stored, so the member's bytes sit as they are in the archive
        for name, content in members.items():
            archive.writestr(name, content)
    raw = bytearray(buffer.getvalue())
    at = raw.index(members["metadata.json"])
    raw[at + 2] ^= 0xFF  # one byte of metadata.json: its CRC no longer matches
    with pytest.raises(KerascompError, match=r"metadata.json: Bad CRC-32"):
        load(_write(bytes(raw), ".keras"))


def _archive_with(source: bytes, edit) -> bytes:
    """``source`` (a ``.keras``) with its config.json changed by ``edit``."""
    with zipfile.ZipFile(io.BytesIO(source)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    edit(config["config"]["layers"])
    members["config.json"] = json.dumps(config).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _reads_node(index):
    def edit(layers):
        layers[2]["inbound_nodes"][0][0][1] = index
    return edit


def _reads_a_later_layer(layers):
    """A cycle: the first convolution reads the layer after it, which reads it."""
    layers[1]["inbound_nodes"][0][0][0] = layers[2]["name"]


@pytest.mark.parametrize("edit, why", [(_reads_node(4.8e162), "a node index that is no whole number"),
                                       (_reads_node(-1), "a node index that is no whole number"),
                                       (_reads_node(3), "node 3 of"), (_reads_a_later_layer, "which is never made")])
def test_a_layer_graph_tf_keras_would_rebuild_for_ever_is_refused(fuzz_keras, edit, why, deadline):
    """Found by the long profile: one node index changed to 4.8e162 hung tf_keras's load_model (re-queueing the
    call for ever). The deadline turns a regression into a failure, not a hung suite."""
    from kerascomp.saving import load

    with deadline(60), pytest.raises(KerascompError, match=f"layer graph in its config cannot be built .*{why}"):
        load(_write(_archive_with(fuzz_keras, edit), ".keras"))
