"""The serving helper against a real `mlflow models serve` process on 127.0.0.1."""

import os
import socket

import numpy as np
import psutil
import pytest
import requests

from dltrack import serving

keras = pytest.importorskip("keras")
pytestmark = pytest.mark.serving


@pytest.fixture(scope="module")
def server(logged_cnn):
    # The kernel's venv is not on PATH: the helper must still find uvicorn.
    saved = os.environ["PATH"]
    os.environ["PATH"] = "/usr/bin:/bin"
    try:
        with serving.ModelServer(logged_cnn[1]) as running:
            yield running
    finally:
        os.environ["PATH"] = saved


@pytest.mark.parametrize("body", ["parquet", "json"])
def test_predictions_match_the_framework(server, logged_cnn, body):
    model, _ = logged_cnn
    batch = np.random.default_rng(1).random((5, 28, 28, 1), dtype=np.float32)
    served = serving.predict(server.url, batch, body=body)
    assert served.shape == (5, 10) and served.dtype == np.float32
    np.testing.assert_allclose(served, model.predict(batch, verbose=0), atol=1e-5)


def test_wrong_shape_is_a_clear_4xx(server):
    with pytest.raises(serving.ServingError) as caught:  # Parquet: 560 values where 784 fit
        serving.predict(server.url, np.zeros((1, 20, 28, 1), np.float32))
    assert caught.value.status == 400
    assert "could not be converted to the expected shape of: '(-1, 28, 28, 1)'" in (
        caught.value.reason
    )
    with pytest.raises(serving.ServingError) as caught:
        serving.predict(server.url, np.zeros((1, 20, 28, 1), np.float32), body="json")
    assert caught.value.status == 400
    assert caught.value.reason.startswith("Shape of input (1, 20, 28, 1) does not match")
    # and the server still answers a good request
    assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200
    assert serving.predict(server.url, np.zeros((1, 28, 28, 1), np.float32)).shape == (1, 10)


def test_binds_loopback_on_a_free_port(server):
    assert server.host == "127.0.0.1" and 1024 < server.port < 65536
    assert server.url == f"http://127.0.0.1:{server.port}"


def test_occupied_port_is_reported_before_starting(logged_cnn):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            serving.ServerStartError, match=f"port {port} on 127.0.0.1 is already in use"
        ):
            serving.ModelServer(logged_cnn[1], port=port).start()


def test_bad_model_uri_fails_fast_with_log_tail():
    server = serving.ModelServer("models:/no-such-model@champion", timeout=120)
    with pytest.raises(serving.ServerStartError, match="exited with code") as caught:
        server.start()
    assert "no-such-model" in str(caught.value)
    assert not server.running


def test_stop_leaves_no_process_behind(logged_cnn):
    server = serving.ModelServer(logged_cnn[1]).start()
    parent = psutil.Process(server.process.pid)
    family = [parent, *parent.children(recursive=True)]
    assert any("uvicorn" in " ".join(p.cmdline()) for p in family)
    server.stop()
    gone, alive = psutil.wait_procs(family, timeout=15)
    assert not alive
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/ping", timeout=2)


def test_context_manager_stops_when_the_block_fails(logged_cnn):
    with pytest.raises(ZeroDivisionError), serving.ModelServer(logged_cnn[1]) as server:
        pid = server.process.pid
        raise ZeroDivisionError("a failing line inside the block")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
