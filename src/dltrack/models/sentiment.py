"""The Hugging Face sentiment model of notebook 03: which model, offline, and clear errors.

The notebook calls ``transformers.pipeline("sentiment-analysis", model=...)`` itself. This
module decides *which* model: the course's Hub model
``distilbert-base-uncased-finetuned-sst-2-english`` by default, or a local model folder from
``DLTRACK_SENTIMENT_MODEL`` (e.g. ``../shared/models/sentiment-minilm``, relative to the
project). When neither the Hub nor a local copy is reachable, :func:`explain_model_errors`
turns the loader's long traceback into one message that says what to set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from dltrack.config import project_root

__all__ = [
    "DEFAULT_SENTIMENT_MODEL",
    "COURSE_SENTENCES",
    "ModelUnavailableError",
    "resolve_sentiment_model",
    "model_availability",
    "explain_model_errors",
    "model_card",
]

ENV_VAR = "DLTRACK_SENTIMENT_MODEL"
DEFAULT_SENTIMENT_MODEL = "distilbert-base-uncased-finetuned-sst-2-english"

#: The course's four sentences and the labels a sentiment model should give them.
COURSE_SENTENCES: dict[str, str] = {
    "The weather is now so pleasant": "POSITIVE",
    "The batting performance of the team was terrible": "NEGATIVE",
    "We are planning a fun picnic today": "POSITIVE",
    "It was way too tiring a journey with not much to show for it": "NEGATIVE",
}


class ModelUnavailableError(OSError):
    """The sentiment model can be loaded neither from the Hub nor from a local folder."""


def resolve_sentiment_model(model: str | os.PathLike[str] | None = None) -> str:
    """The model to load: a Hub id, or an absolute path to a local model folder.

    Order: the argument; ``DLTRACK_SENTIMENT_MODEL``; :data:`DEFAULT_SENTIMENT_MODEL`.
    A relative path that exists under the project folder (or the current directory) becomes
    absolute, so ``../shared/models/sentiment-minilm`` works from ``notebooks/`` too.
    """
    chosen = str(model) if model not in (None, "") else os.environ.get(ENV_VAR) or ""
    if not chosen:
        return DEFAULT_SENTIMENT_MODEL
    path = Path(chosen).expanduser()
    if path.is_absolute():
        return str(path)
    for base in (project_root(), Path.cwd()):
        if (base / path).is_dir():
            return str((base / path).resolve())
    return chosen


def _how_to_fix(name: str) -> str:
    return (
        f"Point {ENV_VAR} (or SENTIMENT_MODEL in the parameters cell) at a local model folder in "
        f"Transformers format (e.g. `export {ENV_VAR}=/path/to/model-folder`; on this project's "
        f"machines ../shared/models/sentiment-minilm), or "
        f"download {name!r} once where the Hub is reachable (it is then cached)."
    )


def model_availability(model: str | None = None) -> tuple[bool, str]:
    """Whether the sentiment model can be loaded here, without loading it, and why not.

    A local folder needs a ``config.json``. A Hub id must be in the local Hugging Face cache, or
    the Hub must answer (checked with a 5 s request unless ``HF_HUB_OFFLINE`` is set).

    Returns:
        (True, model) or (False, a message that says how to fix it).
    """
    name = resolve_sentiment_model(model)
    if Path(name).is_absolute():
        if (Path(name) / "config.json").is_file():
            return True, name
        return False, f"{name} is not a Transformers model folder (no config.json). " + _how_to_fix(
            name
        )
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # huggingface_hub's HFValidationError: neither a folder nor a Hub id
        return (
            False,
            f"{name!r} is neither an existing model folder nor a Hub model id. "
            + _how_to_fix(name),
        )
    if isinstance(cached, str):
        return True, name
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}:
        return (
            False,
            f"{name!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set. "
            + _how_to_fix(name),
        )
    import requests

    try:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        reply = requests.head(f"{endpoint}/api/models/{name}", timeout=5)
    except requests.RequestException:
        return (
            False,
            f"The Hugging Face Hub cannot be reached to download {name!r}. " + _how_to_fix(name),
        )
    if reply.status_code != 200:
        return False, f"The Hub answered HTTP {reply.status_code} for {name!r}. " + _how_to_fix(
            name
        )
    return True, name


@contextlib.contextmanager
def explain_model_errors(model: str | None = None) -> Iterator[None]:
    """Turn a failed model download/load inside the block into one clear error.

    Raises:
        ModelUnavailableError: the loader raised ``OSError`` (what Transformers raises when the
            Hub is unreachable, offline mode has no cached copy, or a folder is not a model) or
            huggingface_hub's ``HFValidationError`` (a name that is neither a folder nor a Hub
            id); the message says how to point at a local model.
    """
    from huggingface_hub.errors import HFValidationError

    name = resolve_sentiment_model(model)
    try:
        yield
    except (OSError, HFValidationError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelUnavailableError(
            f"Cannot load the sentiment model {name!r} ({first_line}). {_how_to_fix(name)}"
        ) from None


def model_card(model: str | None = None):
    """The model card to log with the model: a local folder's ``README.md`` as a
    ``huggingface_hub.ModelCard``, or ``None`` for a Hub model (MLflow fetches that card itself,
    where the Hub is reachable)."""
    name = resolve_sentiment_model(model)
    readme = Path(name) / "README.md"
    if Path(name).is_absolute() and readme.is_file():
        from huggingface_hub import ModelCard

        return ModelCard.load(readme)
    return None
