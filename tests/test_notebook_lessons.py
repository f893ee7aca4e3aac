"""What the notebooks teach, read from their committed source: the library calls of the lesson
are in the cells, every dltrack helper call is explained in prose before its first use, one
parameters cell, the project kernel, and no outputs or test-only cells in git. For the course's
lessons (01, 01b, 02, 03) also: runs opened in ``with`` blocks, code lines of at most 100
characters, markdown cells that say more than a heading, the course profile."""

from __future__ import annotations

import re

import nbformat
import pytest

from dltrack.config import project_root

NOTEBOOKS = project_root() / "notebooks"

TAUGHT = {
    "01_tensorflow_fashion_mnist.ipynb": [
        "keras.datasets.fashion_mnist.load_data()", "mlflow.set_tracking_uri(",
        "mlflow.set_experiment(", "mlflow.start_run(", "mlflow.tensorflow.autolog(",
        "mlflow.log_params(", "mlflow.log_image(", "mlflow.log_figure(", "infer_signature(",
        "mlflow.tensorflow.log_model(", "signature=signature", "input_example=input_example",
        "mlflow.pyfunc.load_model(model_info.model_uri)", "mlflow.models.evaluate(",
        ".get_metric_history(", "mlflow.register_model(",
        ".set_registered_model_alias(", '"challenger"', 'models:/{REGISTERED_MODEL_NAME}@champion',
        "requests.post(", '{"inputs":', "Code(inspect.getsource(keras_cnn.build_course_cnn)",
        "mlflow.artifacts.download_artifacts(model_info.model_uri)", '"MLmodel"',
        '"input_example.json"', '"requirements.txt"', "model_summary.txt", '"tensorboard_logs"',
        "client = MlflowClient()", "train_test_split(", "validation_data=(x_val, y_val)",
        "mlflow.data.from_numpy(", "mlflow.data.from_pandas(", 'context="training"',
        'context="validation"', 'context="test"', "log_datasets=False", "keras.callbacks.Callback",
        'mlflow.log_image(image, key="validation_predictions", step=epoch)',
        "data=test_dataset", "model_id=model_info.model_id",
    ],
    "01b_azure_ml_deployment.ipynb": [
        "MLClient(DefaultAzureCredential()", "MLClient.from_config(", "Model(",
        "type=AssetTypes.MLFLOW_MODEL", "ManagedOnlineEndpoint(", 'auth_mode="key"',
        "ManagedOnlineDeployment(", "ml_client.models.create_or_update(",
        "ml_client.online_endpoints.begin_create_or_update(",
        "ml_client.online_deployments.begin_create_or_update(", "endpoint.traffic =",
        "ml_client.online_endpoints.invoke(", "ml_client.online_endpoints.begin_delete(",
        ".get_model_version_by_alias(", "mlflow.artifacts.download_artifacts(", '{"input_data":',
    ],
    "02_pytorch_lightning_fashion_mnist.ipynb": [
        "datasets.FashionMNIST(", "download=True", "make_grid(", "L.seed_everything(",
        "mlflow.set_tracking_uri(", "mlflow.set_experiment(",
        'with mlflow.start_run(run_name="lightning-cnn") as run:', "mlflow.pytorch.autolog(",
        "trainer.fit(", "trainer.test(", "signature = lightning_cnn.SIGNATURE", "devices=1",
        "mlflow.pytorch.log_model(", "signature=signature", "input_example=input_example",
        "mlflow.pyfunc.load_model(model_info.model_uri)", "mlflow.models.evaluate(",
        "mlflow.log_figure(", ".get_metric_history(", "mlflow.register_model(",
        "tracking.promote(", "Code(inspect.getsource(tracking.promote)",
        "lightning_cnn.silence_known_noise()", "mlflow.data.from_numpy(", "mlflow.data.from_pandas(",
        'context="training"', 'context="validation"', 'context="test"', "data=test_dataset",
        'models:/{REGISTERED_MODEL_NAME}@champion',
        "requests.post(", "test_imgs[4].unsqueeze(0)",
        "Code(inspect.getsource(FashionMNISTCNN.__init__)", "FashionMNISTCNN.forward",
        '"training_step", "validation_step", "test_step"', "FashionMNISTCNN.configure_optimizers",
        "Code(inspect.getsource(FashionMNISTDataModule)",
        "mlflow.artifacts.download_artifacts(model_info.model_uri)", '"MLmodel"',
        '"input_example.json"', '"requirements.txt"', "model_summary.txt",
        "torch.softmax(image_logits, dim=0)", "probabilities.argmax()",
        "data.CLASS_NAMES[predicted_class]", "client = MlflowClient()",
    ],
    "03_transformers_sentiment.ipynb": [
        'pipeline("sentiment-analysis"', "mlflow.set_tracking_uri(", "mlflow.set_experiment(",
        "with mlflow.start_run(", "mlflow.transformers.log_model(", "input_example=",
        "mlflow.pyfunc.load_model(model_info.model_uri)", "mlflow.models.evaluate(",
        "@mlflow.trace", "mlflow.get_trace(", "requests.post(",
    ],
    "04_serving_at_speed.ipynb": [
        "import torch", "import triton", "mlflow.set_tracking_uri(", "mlflow.tensorflow.load_model(",
        "mlflow.pytorch.load_model(", "mlflow.models.get_model_info(", '@champion"',
        "mlflow.set_experiment(", "mlflow.start_run(", "mlflow.log_params(", ".to_parquet(",
        "pd.read_parquet(", 'json={"inputs":', "requests.post(",
        '"Content-Type": "application/vnd.apache.parquet"', "requests.Session()",
        "tf.function(", ".get_concrete_function()", "torch.inference_mode()", "json.loads(",
        "mlflow.log_figure(", "mlflow.log_metrics(", "mlflow.log_table(", "raise_for_status()",
    ],
    "05_training_beyond_one_machine.ipynb": [
        '"torch.distributed.run", "--standalone"', "--nproc_per_node=", '"MLFLOW_RUN_ID"',
        "mlflow.set_tracking_uri(", "mlflow.set_experiment(",
        'with mlflow.start_run(run_name="ddp-cnn") as run:', "mlflow.search_runs(",
        ".get_metric_history(", "mlflow.search_logged_models(", '"field_name": "metrics.val_acc"',
        'mlflow.pyfunc.load_model(f"models:/{best.model_id}")', "mlflow.log_metric(",
        "model_id=best.model_id", "mlflow.register_model(", "tracking.promote(", "--every-rank-logs", "torch.cuda.is_available()",
        "command(", ".inputs.dataset_inputs", "metric.dataset_name",
        "PyTorchDistribution(process_count_per_instance=", "instance_count=", "compute=",
        "print(job)", "Environment(", "ml_client.jobs.create_or_update(job)", "ml_client.jobs.stream(",
        "threading.Timer(", 'mlflow.log_text("".join(log), "torchrun.log")', "--max-restarts=",
    ],
    "06_hyperparameter_sweeps.ipynb": [
        "mlflow.set_tracking_uri(", "mlflow.set_experiment(", "optuna.create_study(",
        "load_if_exists=True", "optuna.delete_study(", 'with mlflow.start_run(run_name="sweep")',
        "subprocess.Popen(", "sweeps.worker_command(", "mlflow.search_runs(",
        "tags.mlflow.parentRunId", "study.get_trials(", "study.best_trial", "mlflow.log_params(",
        "mlflow.log_metric(", "plot_optimization_history(", "plot_intermediate_values(",
        "mlflow.log_figure(", "mlflow.artifacts.download_artifacts(", "load_state_dict(",
        "mlflow.pytorch.log_model(", "signature=signature", "mlflow.register_model(",
        "tracking.promote(",
        ".add_trials(", "model_id=model_info.model_id", "env=env",
    ],
}  # fmt: skip

#: A call into dltrack: module.function( or a dltrack class.
HELPER_CALL = re.compile(
    r"(?<![\w.])(?:data|evaluation|tracking|serving|fast|azure|sentiment|keras_cnn|sweeps)\.[a-z_]+\(|"
    r"\b(?:FashionMNISTCNN|FashionMNISTDataModule)\("
)


def _code_cells(name: str) -> list:
    return [c for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells if c.cell_type == "code"]


def test_every_notebook_is_listed():
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == set(TAUGHT)


@pytest.mark.parametrize("name", sorted(TAUGHT))
def test_the_taught_calls_are_in_the_cells(name):
    source = "\n".join(cell.source for cell in _code_cells(name))
    missing = [call for call in TAUGHT[name] if call not in source]
    assert not missing, f"{name} does not show {missing}"


@pytest.mark.parametrize("name", sorted(TAUGHT))
def test_each_helper_call_is_explained_in_prose_before_its_first_use(name):
    """A dltrack call is introduced once, in a markdown cell before the cell that first calls it
    (by its name), not by an end-of-line remark on every line: at most one ``# dltrack:``."""
    seen_prose, unexplained, remarks = "", [], 0
    for cell in nbformat.read(NOTEBOOKS / name, as_version=4).cells:
        if cell.cell_type == "markdown":
            seen_prose += cell.source
            continue
        remarks += cell.source.count("# dltrack:")
        if "parameters" in cell.metadata.get("tags", []):
            continue  # env_param and the store's default: the parameters cell explains itself
        for line in cell.source.splitlines():
            for call in HELPER_CALL.findall(line.split("#")[0]):
                if call.rstrip("(").rpartition(".")[2] not in seen_prose:
                    unexplained.append(call)
    assert not unexplained, (
        f"{name}: helper calls no markdown cell before introduces: {unexplained}"
    )
    assert remarks <= 1, f"{name}: {remarks} '# dltrack:' remarks; explain helpers in prose"


@pytest.mark.parametrize("name", sorted(TAUGHT))
def test_committed_clean_with_one_parameters_cell_and_the_project_kernel(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = _code_cells(name)
    assert all(not c.outputs and c.execution_count is None for c in cells)
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
    assert tagged == [1], "one parameters cell, right after the imports"
    assert notebook.metadata.kernelspec.name == "dltrack"
    source = "\n".join(c.source for c in cells)
    assert "rest_check" not in source and "set_tag(" not in source  # no cells for the tests
    assert "127.0.0.1:" not in source and "localhost" not in source  # no hard-coded ports


LESSONS = sorted(TAUGHT)


@pytest.mark.parametrize("name", LESSONS)
def test_lessons_read_top_to_bottom(name):
    """Runs open and close in a ``with`` block, no line is there for the tests, code lines fit
    JupyterLab at 1440 px (100 characters), and every markdown cell says more than a heading."""
    cells = nbformat.read(NOTEBOOKS / name, as_version=4).cells
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    bare_runs = [line.strip() for line in code.splitlines()
                 if "mlflow.start_run(" in line and not line.strip().startswith("with ")]  # fmt: skip
    assert not bare_runs and "mlflow.end_run()" not in code, bare_runs
    assert "server running" not in code  # the tests check the processes, not a printed marker
    long = [line for line in code.splitlines() if len(line) > 100]
    assert not long, f"{name}: code lines over 100 characters: {long}"
    headings_only = [c.source for c in cells if c.cell_type == "markdown"
                     and all(line.startswith("#") or not line.strip()
                             for line in c.source.splitlines())]  # fmt: skip
    assert not headings_only, f"{name}: markdown cells with a heading only: {headings_only}"
    if "%autoreload" in code:
        assert any("`%autoreload 2`" in c.source for c in cells if c.cell_type == "markdown")


@pytest.mark.parametrize(
    "name", ["01_tensorflow_fashion_mnist.ipynb", "02_pytorch_lightning_fashion_mnist.ipynb"]
)
def test_the_parameters_cell_switches_to_the_course_profile(name, monkeypatch):
    """01 and 02: DLTRACK_PROFILE=course gives the course's values, a single variable still
    overrides its one value, and the cell prints which profile is active."""
    (cell,) = [c for c in _code_cells(name) if "parameters" in c.metadata.get("tags", [])]
    assert 'PROFILE = env_param("DLTRACK_PROFILE", "default", choices=PROFILES)' in cell.source
    assert 'print(f"profile {PROFILE!r}' in cell.source

    def values(**env: str) -> dict:
        for key in ("DLTRACK_PROFILE", "DLTRACK_LR_SCHEDULE"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        namespace: dict = {}
        exec("from dltrack import tracking\nfrom dltrack.config import PROFILES, env_param\n"
             "from dltrack.models.lightning_cnn import COURSE_LEARNING_RATE\n"
             + cell.source.replace("print(", "str("), namespace)  # fmt: skip
        return namespace

    course = {"LR_SCHEDULE": "constant"} | (
        {"STEPS_PER_EXECUTION": 1} if name.startswith("01") else
        {"LEARNING_RATE": 0.02, "DROPOUT": "dropout2d", "MEMORY_FORMAT": "contiguous"})  # fmt: skip
    default = values()
    assert default["PROFILE"] == "default"
    assert all(default[key] != value for key, value in course.items())
    chosen = values(DLTRACK_PROFILE="course")
    assert {key: chosen[key] for key in course} == course
    assert values(DLTRACK_PROFILE="course", DLTRACK_LR_SCHEDULE="cosine")["LR_SCHEDULE"] == "cosine"


def _call(source: str, start: str) -> str:
    """The text of the call that begins with ``start`` in ``source``, to its closing bracket."""
    begin = source.index(start)
    depth = 0
    for end in range(begin + len(start) - 1, len(source)):
        depth += {"(": 1, ")": -1}.get(source[end], 0)
        if depth == 0:
            return source[begin : end + 1]
    raise AssertionError(f"unclosed call {start!r}")


def test_notebook_01_keeps_the_test_set_out_of_fit():
    """01 validates on a seeded split of the training images (the course validated on the test
    set): ``fit`` sees no test array, and the split is cut from the training arrays only."""
    source = "\n".join(c.source for c in _code_cells("01_tensorflow_fashion_mnist.ipynb"))
    fit = _call(source, "model.fit(")
    assert "test" not in fit and "validation_data=(x_val, y_val)" in fit, fit
    split = _call(source, "train_test_split(")
    assert "x_train_scaled, y_train_onehot" in split and "x_test" not in split, split
    assert "random_state=SEED" in split and "stratify=y_train" in split
    assert "x_test" not in _call(source, "keras_cnn.build_course_cnn(")


def test_notebook_02_keeps_the_test_set_out_of_fit():
    """02's data module cuts validation from the training images; the trainer fits on it."""
    import inspect

    from dltrack.models.lightning_cnn import FashionMNISTDataModule

    setup = inspect.getsource(FashionMNISTDataModule.setup)
    split = _call(setup, "random_split(")
    assert split.startswith("random_split(full,") and "train=True" in setup.split("random_split")[0]
    assert "self.val_set" in inspect.getsource(FashionMNISTDataModule.val_dataloader)
    source = "\n".join(c.source for c in _code_cells("02_pytorch_lightning_fashion_mnist.ipynb"))
    assert _call(source, "trainer.fit(") == "trainer.fit(model, datamodule=datamodule)"
