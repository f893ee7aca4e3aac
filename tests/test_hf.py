"""dltrack.hf, and MLflow's transformers flavor end to end on a tiny model."""

from pathlib import Path

import mlflow
import pytest

from dltrack import hf, tracking

transformers = pytest.importorskip("transformers")


def test_default_is_the_course_model(monkeypatch):
    monkeypatch.delenv("DLTRACK_SENTIMENT_MODEL", raising=False)
    assert hf.resolve_sentiment_model() == "distilbert-base-uncased-finetuned-sst-2-english"


def test_relative_folder_resolves_from_project(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert hf.resolve_sentiment_model("src/dltrack") == str(Path(hf.__file__).parent)
    monkeypatch.setenv("DLTRACK_SENTIMENT_MODEL", "src/dltrack")
    assert hf.resolve_sentiment_model() == str(Path(hf.__file__).parent)


def test_folder_without_config_is_unavailable(tmp_path):
    ok, message = hf.model_availability(str(tmp_path))
    assert not ok and "no config.json" in message and "DLTRACK_SENTIMENT_MODEL" in message


def test_offline_hub_model_not_cached_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    ok, message = hf.model_availability("someone/not-cached-model")
    assert not ok
    assert "HF_HUB_OFFLINE" in message and "export DLTRACK_SENTIMENT_MODEL=" in message


def test_offline_load_failure_becomes_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(hf.ModelUnavailableError) as caught:  # noqa: SIM117
        with hf.explain_model_errors("someone/not-cached-model"):
            transformers.pipeline("sentiment-analysis", model="someone/not-cached-model")
    message = str(caught.value)
    assert message.startswith("Cannot load the sentiment model 'someone/not-cached-model'")
    assert "DLTRACK_SENTIMENT_MODEL" in message and "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_sentences_are_balanced_and_checked():
    sentences = hf.load_sentences()
    assert len(sentences) == 300
    assert sentences["label"].value_counts().to_dict() == {"POSITIVE": 150, "NEGATIVE": 150}
    assert set(sentences["source"]) == {"amazon", "imdb", "yelp"}


def test_sentences_checksum(monkeypatch, tmp_path):
    copy = tmp_path / "sentiment-sentences" / "sentences-300.csv"
    copy.parent.mkdir()
    copy.write_text("source,text,label\nx,y,POSITIVE\n")
    monkeypatch.setattr(hf, "data_dir", lambda: tmp_path)
    with pytest.raises(OSError, match="sentences-300.csv is corrupted"):
        hf.load_sentences()


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


def test_mlflow_plumbing_with_tiny_random_model(mlflow_store, tiny_random_pipeline):
    tracking.get_or_create_experiment("test-hf-plumbing")
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
    ok, message = hf.model_availability()
    if not ok:
        pytest.skip(message)
    return hf.resolve_sentiment_model()


def test_logged_real_model_gives_the_course_labels(mlflow_store, real_model):
    tracking.get_or_create_experiment("test-hf-real")
    sentiment = transformers.pipeline("sentiment-analysis", model=real_model)
    with mlflow.start_run():
        info = mlflow.transformers.log_model(
            transformers_model=sentiment, name="sentiment-model",
            input_example=list(hf.COURSE_SENTENCES)[:2], model_card=hf.model_card(real_model),
        )  # fmt: skip
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    if Path(real_model).is_absolute():
        assert (local / "model_card.md").read_text().strip()
    predictions = mlflow.pyfunc.load_model(info.model_uri).predict(list(hf.COURSE_SENTENCES))
    assert predictions["label"].tolist() == list(hf.COURSE_SENTENCES.values())


def test_misspelled_folder_is_reported_not_crashed(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ok, message = hf.model_availability("../no/such/model-folder")
    assert not ok and "neither an existing model folder nor a Hub model id" in message
