"""dltrack.models.sentiment (which model, offline errors), and MLflow's transformers flavor end to
end on a tiny model and on the real one."""

from pathlib import Path

import mlflow
import pytest

from dltrack.models import sentiment

transformers = pytest.importorskip("transformers")


def test_default_is_the_course_model(monkeypatch):
    monkeypatch.delenv("DLTRACK_SENTIMENT_MODEL", raising=False)
    assert sentiment.resolve_sentiment_model() == "distilbert-base-uncased-finetuned-sst-2-english"


def test_relative_folder_resolves_from_project(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert sentiment.resolve_sentiment_model("src/dltrack") == str(
        Path(sentiment.__file__).parents[1]
    )
    monkeypatch.setenv("DLTRACK_SENTIMENT_MODEL", "src/dltrack")
    assert sentiment.resolve_sentiment_model() == str(Path(sentiment.__file__).parents[1])


def test_folder_without_config_is_unavailable(tmp_path):
    ok, message = sentiment.model_availability(str(tmp_path))
    assert not ok and "no config.json" in message and "DLTRACK_SENTIMENT_MODEL" in message


def test_offline_hub_model_not_cached_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    ok, message = sentiment.model_availability("someone/not-cached-model")
    assert not ok
    assert "HF_HUB_OFFLINE" in message and "export DLTRACK_SENTIMENT_MODEL=" in message


def test_offline_load_failure_becomes_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(sentiment.ModelUnavailableError) as caught:  # noqa: SIM117
        with sentiment.explain_model_errors("someone/not-cached-model"):
            transformers.pipeline("sentiment-analysis", model="someone/not-cached-model")
    message = str(caught.value)
    assert message.startswith("Cannot load the sentiment model 'someone/not-cached-model'")
    assert "DLTRACK_SENTIMENT_MODEL" in message and "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.fixture(scope="module")
def tiny_random_pipeline(tmp_path_factory):
    """A tiny BERT classifier with RANDOM weights, built from a config: plumbing only.

    It is not a sentiment model; it exists so MLflow's transformers flavor can be tested where
    neither the Hub nor a local model is available.
    """
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-random-bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "weather", "is", "good", "bad"]
    (folder / "vocab.txt").write_text("\n".join(words))
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    config = BertConfig(
        vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )  # fmt: skip
    model = BertForSequenceClassification(config)
    return transformers.pipeline("sentiment-analysis", model=model, tokenizer=tokenizer)


def test_mlflow_plumbing_with_tiny_random_model(experiment, tiny_random_pipeline):
    experiment("test-hf-plumbing")
    with mlflow.start_run():
        info = mlflow.transformers.log_model(
            transformers_model=tiny_random_pipeline,
            name="tiny-random",
            input_example=["the weather is good"],
        )
    assert info.flavors.keys() >= {"transformers", "python_function"}
    assert [c["type"] for c in info.signature.inputs.to_dict()] == ["string"]
    assert [c["name"] for c in info.signature.outputs.to_dict()] == ["label", "score"]
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    assert (local / "components" / "tokenizer" / "tokenizer_config.json").is_file()
    predictions = mlflow.pyfunc.load_model(info.model_uri).predict(["the weather is good", "bad"])
    assert list(predictions.columns) == ["label", "score"] and len(predictions) == 2
    assert set(predictions["label"]) <= {"NEGATIVE", "POSITIVE"}
    assert ((predictions["score"] > 0) & (predictions["score"] <= 1)).all()


@pytest.fixture(scope="module")
def real_model():
    ok, message = sentiment.model_availability()
    if not ok:
        pytest.skip(message)
    return sentiment.resolve_sentiment_model()


def test_logged_real_model_gives_the_course_labels(experiment, real_model):
    experiment("test-hf-real")
    classifier = transformers.pipeline("sentiment-analysis", model=real_model)
    with mlflow.start_run():
        info = mlflow.transformers.log_model(
            transformers_model=classifier, name="sentiment-model",
            input_example=list(sentiment.COURSE_SENTENCES)[:2], model_card=sentiment.model_card(real_model),
        )  # fmt: skip
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    if Path(real_model).is_absolute():
        assert (local / "model_card.md").read_text().strip()
    predictions = mlflow.pyfunc.load_model(info.model_uri).predict(list(sentiment.COURSE_SENTENCES))
    assert predictions["label"].tolist() == list(sentiment.COURSE_SENTENCES.values())


def test_misspelled_folder_is_reported_not_crashed(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ok, message = sentiment.model_availability("../no/such/model-folder")
    assert not ok and "neither an existing model folder nor a Hub model id" in message
