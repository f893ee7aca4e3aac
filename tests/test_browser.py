"""What a learner sees, in a real browser: Debian's Chromium driven by Playwright for Python,
against a real ``mlflow ui`` on the store the notebooks wrote, and JupyterLab started by
``make lab``. Each checked page is saved to ``build/screenshots/`` (git-ignored).

Chromium comes from ``make setup-browser`` (Playwright's own browser download is not reachable
on many networks); see the ``browser`` fixture in conftest.py.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil

import mlflow
import pytest
import requests
from mlflow import MlflowClient

from dltrack import tracking
from dltrack.config import project_root
from dltrack.models import sentiment
from dltrack.serving.process import BackgroundServer

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser
SHOTS = project_root() / "build" / "screenshots"
TF = ("01_tensorflow_fashion_mnist.ipynb", "fashion_images_prediction_tf", "keras-cnn")
HF = ("03_transformers_sentiment.ipynb", "sentiment_analysis_transformers", "sentiment-pipeline")
MODEL = "fashion_mnist_prediction_model"


class MakeUI(BackgroundServer):
    """``make ui`` on a free port: the MLflow UI a learner starts, with the links it prints."""

    ready_path = "/health"
    name = "make-ui"

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("extra_env", {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        super().__init__(**kwargs)

    def command(self) -> list[str]:  # noqa: D102
        return ["make", "-C", str(project_root()), "ui", f"PORT={self.port}"]

    def printed_link(self, experiment: str) -> str:
        """The link ``make ui`` printed for ``experiment``."""
        (line,) = [line for line in self.log_tail(200).splitlines() if f"'{experiment}':" in line]
        return line.split(": ", 1)[1].strip()


def _latest_run(experiment: str, run_name: str):
    found = MlflowClient().get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = MlflowClient().search_runs(
        [found.experiment_id],
        filter_string=f"attributes.run_name = '{run_name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


@pytest.fixture(scope="module")
def store(notebooks) -> dict:
    """The session store with notebook 01's run (and 03's trace where its model loads), as the
    notebooks' executions wrote them. Adds one run without metrics, the negative control of the
    chart check."""
    notebooks.second(TF[0])
    try:
        notebooks.second(HF[0])
    except pytest.skip.Exception:  # no sentiment model here: its test says so (CI fails it)
        pass
    mlflow.set_tracking_uri(tracking.tracking_uri())
    tracking.prepare_experiment("ui-negative-control")
    with mlflow.start_run(
        experiment_id=mlflow.get_experiment_by_name("ui-negative-control").experiment_id,
        run_name="no-metrics",
    ) as empty:
        mlflow.log_param("purpose", "a run whose charts have no data")
    keras_run = _latest_run(*TF[1:])
    hf_run = _latest_run(*HF[1:])
    traces = (
        mlflow.search_traces(locations=[hf_run.info.experiment_id], return_type="list")
        if hf_run
        else []
    )
    return {"keras_run": keras_run, "empty_run": empty, "hf_run": hf_run, "traces": traces}


@pytest.fixture(scope="module")
def make_ui(store):
    with MakeUI() as server:
        yield server


@pytest.fixture(scope="module")
def ui(make_ui) -> str:
    return make_ui.url


@pytest.fixture(scope="module")
def page(browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(60_000)
    yield context.new_page()
    context.close()


def test_the_printed_experiment_link_opens_on_its_training_runs(make_ui, store, page):
    run = store["keras_run"]
    link = make_ui.printed_link(TF[1])
    assert link == tracking.experiment_url(run.info.experiment_id, base=make_ui.url)
    page.goto(link)
    run_link = page.get_by_role("link", name=TF[2], exact=True).first
    run_link.wait_for()
    page.wait_for_function("() => location.hash.includes('/runs')")
    assert run.info.run_id in (run_link.get_attribute("href") or "")
    assert "workflowType=machine_learning" in page.evaluate("location.hash")
    page.screenshot(path=str(SHOTS / "1-experiment-training-runs.png"))


#: Reads a Plotly chart's own data and what it drew: how many points each trace holds, and the
#: markers and line vertices in its SVG.
PLOT_PROBE = """card => {
  const plot = card.querySelector('.js-plotly-plot');
  if (!plot) return {points: [], markers: 0, vertices: 0};
  const points = (plot.data || []).map(t => (t.y || []).filter(v => v !== null && !Number.isNaN(v)).length);
  const markers = plot.querySelectorAll('.scatterlayer g.trace path.point').length;
  const vertices = Math.max(0, ...[...plot.querySelectorAll('.scatterlayer g.trace path.js-line')]
      .map(p => ((p.getAttribute('d') || '').match(/[ML]/g) || []).length));
  return {points, markers, vertices};
}"""


CARD = '[data-testid="experiment-view-compare-runs-card"]'


def charts_with_data(
    page, metrics: list[str], at_least: int, section: str = "Model metrics"
) -> dict[str, bool]:
    """On a run's metrics tab: for each metric, whether its chart holds at least ``at_least``
    points and drew them (markers, or a line). A title alone is not enough. The section's
    header counts its charts ("Model metrics (2)") once the run is loaded, so a run without
    charts is known at once, with no waiting on a guess of how slow the page is. The UI draws
    only the charts in view: each is brought there with the page's own chart search."""
    header = page.get_by_test_id("experiment-view-compare-runs-section-header")
    header = header.filter(has_text=section).first
    header.wait_for()
    count = int(re.search(r"\((\d+)\)", header.inner_text()).group(1))
    found = {}
    for metric in metrics:
        if not count:
            found[metric] = False
            continue
        page.get_by_placeholder("Search metric charts").fill(metric)
        card = page.locator(CARD).filter(has=page.locator(f'h4[title="{metric}"]')).first
        try:
            card.wait_for(state="attached")
        except playwright_api.TimeoutError:  # charts, but none of this metric
            found[metric] = False
            continue
        card.scroll_into_view_if_needed()  # the UI draws a chart once it is in view
        card.locator(".scatterlayer g.trace path").first.wait_for(state="attached")
        probe = card.evaluate(PLOT_PROBE)
        drawn = probe["markers"] >= at_least or probe["vertices"] >= 2
        found[metric] = max(probe["points"] or [0]) >= at_least and drawn
    return found


def test_the_run_charts_loss_and_accuracy_with_data(ui, store, page):
    run = store["keras_run"]
    epochs = int(run.data.params["epochs"])
    page.goto(
        f"{ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/model-metrics"
        "?workflowType=machine_learning"
    )
    assert charts_with_data(page, ["loss", "accuracy"], at_least=epochs) == {
        "loss": True,
        "accuracy": True,
    }
    page.screenshot(path=str(SHOTS / "2-run-metric-charts.png"))


def test_the_chart_check_fails_on_a_run_without_metrics(ui, store, page):
    run = store["empty_run"]
    page.goto(
        f"{ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/model-metrics"
        "?workflowType=machine_learning"
    )
    assert charts_with_data(page, ["loss", "accuracy"], at_least=1) == {
        "loss": False,
        "accuracy": False,
    }


def test_the_run_lists_its_datasets_and_slides_through_its_predictions_by_epoch(ui, store, page):
    """Notebook 01's run names its datasets on its overview, and its Model metrics tab holds
    the predictions image logged once per epoch (``log_image(key=, step=)``) with a step slider
    over every epoch."""
    run = store["keras_run"]
    epochs = int(run.data.params["epochs"])
    base = f"{ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    page.goto(f"{base}?workflowType=machine_learning")
    page.get_by_text("fashion-mnist-train").first.wait_for()
    page.goto(f"{base}/model-metrics?workflowType=machine_learning")
    page.get_by_test_id("experiment-view-compare-runs-section-header").first.wait_for()
    page.get_by_placeholder("Search metric charts").fill("validation_predictions")
    card = page.locator(CARD).filter(has_text="validation_predictions").first
    card.wait_for()
    card.scroll_into_view_if_needed()
    slider = card.locator('[role="slider"]').first
    slider.wait_for()
    assert (slider.get_attribute("aria-valuemin"), slider.get_attribute("aria-valuemax")) == (
        "0", str(epochs - 1)
    )
    card.locator("img").first.wait_for()
    page.screenshot(path=str(SHOTS / "3-predictions-by-epoch.png"))


def test_a_sample_image_previews_in_the_artifacts_tab(ui, store, page):
    run = store["keras_run"]
    image = "sample_images/0_T-shirt-top.png"
    page.goto(
        f"{ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/artifacts"
        "?workflowType=machine_learning"
    )
    nodes = page.get_by_test_id("artifact-tree-node")
    nodes.filter(has_text=re.compile(r"^\s*sample_images\s*$")).first.click()
    nodes.filter(has_text=re.compile(r"^\s*0_T-shirt-top\.png\s*$")).first.click()
    preview = page.locator(f'img[alt="{image}"]').first
    preview.wait_for(state="visible")
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0 }",
        arg=f'img[alt="{image}"]',
    )
    assert preview.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [196, 196]
    page.screenshot(path=str(SHOTS / "3-artifact-image-preview.png"))


def test_the_registered_model_shows_its_versions_and_the_champion_alias(ui, store, page):
    champion = MlflowClient().get_model_version_by_alias(MODEL, "champion")
    page.goto(tracking.registry_url(MODEL, base=ui))
    name = f"Version {champion.version}"
    row = (
        page.get_by_test_id("model-version-table")
        .get_by_role("row")
        .filter(has=page.get_by_role("link", name=name, exact=True))
        .first
    )
    row.wait_for()
    row.get_by_text(re.compile(r"@\s*champion\b")).first.wait_for()
    link = row.get_by_role("link", name=name, exact=True).get_attribute("href") or ""
    assert link.endswith(f"/models/{MODEL}/versions/{champion.version}")
    page.screenshot(path=str(SHOTS / "4-registered-model.png"))


def test_notebook_03s_trace_is_listed_in_the_traces_view(ui, store, page):
    if store["hf_run"] is None:
        pytest.skip(sentiment.model_availability()[1])
    assert store["traces"], "notebook 03 logged no trace"
    trace_id = store["traces"][0].info.trace_id
    page.goto(f"{ui}/#/experiments/{store['hf_run'].info.experiment_id}/traces?workflowType=genai")
    # CSS, not roles: a first-visit popover hides the page from role locators until dismissed
    page.locator(f'[role="table"] a[href*="traceId={trace_id}"]').first.wait_for(state="attached")
    got_it = page.get_by_role("button", name="Got it")
    if got_it.count():
        got_it.first.click()
    page.screenshot(path=str(SHOTS / "5-traces.png"))


class JupyterLab(BackgroundServer):
    """``make lab`` on a free port, with a token of our own (token authentication stays on)."""

    ready_path = "/api"
    name = "jupyterlab"

    def __init__(self, token: str, **kwargs) -> None:
        kwargs.setdefault("timeout", 120.0)
        kwargs.setdefault("extra_env", {"JUPYTER_TOKEN": token})
        super().__init__(**kwargs)

    def command(self) -> list[str]:  # noqa: D102
        return ["make", "-C", str(project_root()), "lab", f"LAB_PORT={self.port}"]


def test_make_lab_opens_notebook_01_with_the_project_kernel(store, page):
    token = secrets.token_hex(16)
    with JupyterLab(token) as lab:
        assert requests.get(f"{lab.url}/api/contents", timeout=10).status_code == 403  # token on
        page.goto(f"{lab.url}/lab/tree/{TF[0]}?token={token}")
        page.get_by_text("Python 3 (dltrack)").first.wait_for()  # the kernel the notebook names
        # on a slow or busy machine the kernel can still be starting: a key pressed before it is
        # idle may be lost, so run the cell only once the toolbar says the kernel is idle
        idle = page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
        idle.first.wait_for(timeout=180_000)
        page.locator(".jp-Notebook .jp-CodeCell").first.click()
        page.keyboard.press("Shift+Enter")
        banner = page.locator(".jp-OutputArea-output").filter(has_text="| mlflow ")
        banner.first.wait_for(timeout=180_000)
        assert re.match(r"dltrack [\d.]+ \| mlflow 3\.", banner.first.inner_text())
        page.screenshot(path=str(SHOTS / "6-jupyterlab-notebook-01.png"))


def test_make_docs_site_shows_the_index_and_a_lesson_with_its_images(notebooks, tmp_path, page):
    """``tools/site_builder.py`` (``make docs``) on notebook 01 as the session executed it: the index
    links the lesson by its title, and the lesson page shows its figures, loaded."""
    from site_builder import build_site  # tools/site_builder.py

    folder = tmp_path / "executed"  # notebook 01 alone, as the session executed it
    folder.mkdir()
    shutil.copy(notebooks.second(TF[0]), folder)
    (lesson,) = build_site(folder, tmp_path / "site")
    page.goto((tmp_path / "site" / "index.html").as_uri())
    link = page.get_by_role("link", name=re.compile(r"^01 · Keras CNN on Fashion-MNIST"))
    with page.expect_navigation(wait_until="domcontentloaded"):
        link.click()
    assert page.url == lesson.as_uri()
    page.get_by_text("What MLflow wrote: the logged model's files").first.wait_for()
    loaded = page.locator("img").evaluate_all(
        "images => images.filter(i => i.complete && i.naturalWidth > 100).length"
    )
    assert loaded >= 5  # the sample grid, predictions, confusion matrix, mistakes, curves
    page.screenshot(path=str(SHOTS / "7-docs-lesson-01.png"), full_page=False)


DDP = ("05_training_beyond_one_machine.ipynb", "fashion_images_prediction_ddp", "ddp-cnn")


@pytest.mark.team
def test_the_ddp_runs_system_metrics_tab_charts_each_node(notebooks, team, as_alice, browser):
    """Notebook 05 ran on the team server: alice signs in to its UI, opens the DDP run's System
    metrics tab and sees a CPU chart with data for each node the run logged system metrics for."""
    notebooks.second(DDP[0])
    run = _latest_run(*DDP[1:])
    nodes = sorted({key.split("/")[1] for key in run.data.metrics if key.startswith("system/")})
    assert nodes, "the DDP run logged no system metrics"
    password = os.environ["MLFLOW_TRACKING_PASSWORD"]  # alice's, set by as_alice
    context = browser.new_context(
        http_credentials={"username": "alice", "password": password},
        viewport={"width": 1440, "height": 900},
    )
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.goto(tracking.run_url(run.info.experiment_id, run.info.run_id, team.url, tab="system-metrics"))
    headers = page.get_by_test_id("experiment-view-compare-runs-section-header")
    drawn = {}
    for node in nodes:
        header = headers.filter(has_text=f"system/{node}").first
        header.wait_for()
        header.scroll_into_view_if_needed()  # the UI draws a section's charts once in view
        card = page.locator('[data-testid="experiment-view-compare-runs-card"]').filter(
            has=page.locator(f'h4[title="system/{node}/cpu_utilization_percentage"]')
        )
        card.first.wait_for(state="attached")
        card.first.scroll_into_view_if_needed()
        card.first.locator(".scatterlayer g.trace path").first.wait_for(state="attached")
        probe = card.first.evaluate(PLOT_PROBE)
        drawn[node] = max(probe["points"] or [0]) >= 1
    assert drawn == dict.fromkeys(nodes, True)
    page.screenshot(path=str(SHOTS / "7-ddp-system-metrics.png"))
    context.close()
