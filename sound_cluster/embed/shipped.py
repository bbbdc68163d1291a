"""Where a fit's encoder starts from (``model.init``), and the card that travels with an encoder.

``model.init`` is ``pretrained`` (the encoder shipped in ``sound_cluster/embed/pretrained/``),
``scratch`` (random weights) or the path of a ``.keras`` encoder: one written by
``task=pretrain`` (its card ``<name>.json`` beside it) or a fit run's ``models/embedding.keras``
(its ``params.json`` beside it). The card records the feature settings and the architecture the
encoder was trained with; a run whose settings differ is refused before any work, naming the key.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sound_cluster.config import FeatureParams, ModelParams
from sound_cluster.errors import ConfigError
from sound_cluster.run_folder import ModelsFolder

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).parent / "pretrained" / ModelsFolder.PRETRAINED  # named as task=pretrain writes it
CARD_FORMAT = "sound_cluster.encoder/1"


@dataclass(frozen=True)
class InitSource:
    """A checked starting point: the encoder file and its card."""

    path: Path
    card: dict[str, Any]


def card_path(encoder_path: Path) -> Path:
    """The card of an encoder: ``<stem>.json`` beside it, else a fit run's ``params.json``."""
    own = encoder_path.with_suffix(".json")
    return own if own.is_file() else encoder_path.with_name(ModelsFolder.PARAMS)


def _flatten(value: Any) -> Any:
    """Tuples become lists, so settings compare equal to their JSON form."""
    if isinstance(value, (list, tuple)):
        return [_flatten(v) for v in value]
    if isinstance(value, dict):
        return {k: _flatten(v) for k, v in value.items()}
    return value


def resolve_init(model: ModelParams, features: FeatureParams) -> InitSource | None:
    """The encoder a fit starts from, checked against the run's settings; ``None`` for scratch.

    Raises
    ------
    ConfigError
        The encoder or its card is missing or unreadable, or it was trained with other feature
        settings or another architecture; the message names the key and both values.
    """
    if model.init == "scratch":
        return None
    path = SHIPPED if model.init == "pretrained" else Path(model.init).expanduser()
    if not path.is_file():
        if model.init == "pretrained":
            raise ConfigError(f"model.init=pretrained: no pretrained encoder is installed at {path}; "
                              "use model.init=scratch or the path of an encoder")
        raise ConfigError(f"model.init must be pretrained, scratch or the path of a .keras encoder, "
                          f"got {model.init!r} (no such file)")
    card_file = card_path(path)
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.init: cannot read the card of {path} ({card_file}): {err}") from None
    if not isinstance(card, dict) or not isinstance(card.get("features"), dict) \
            or not isinstance(card.get("model"), dict):
        raise ConfigError(f"model.init: {card_file} must hold the objects 'features' and 'model'")
    ours = features.encoder_fields()
    for key, value in ours.items():
        theirs = card["features"].get(key)
        if _flatten(theirs) != _flatten(value):
            raise ConfigError(f"model.init: the encoder {path} was trained with features.{key}={theirs!r}, "
                              f"this run has features.{key}={value!r}; use the same setting or model.init=scratch")
    for key, value in model.architecture().items():
        theirs = card["model"].get(key)
        if _flatten(theirs) != _flatten(value):
            raise ConfigError(f"model.init: the encoder {path} has model.{key}={theirs!r}, this run has "
                              f"model.{key}={value!r}; use the encoder's architecture or model.init=scratch")
    return InitSource(path, card)


def transfer_weights(source, target, *, skip=()) -> list[str]:
    """Copy the weights of every layer of ``source`` into the layer of the same name in ``target``.

    Layers named in ``skip``, and layers whose weight shapes differ (the cluster heads, when K
    differs), keep ``target``'s fresh weights. Returns the names of the layers copied.
    """
    copied = []
    by_name = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        src = by_name.get(layer.name)
        if src is None or not layer.weights or layer.name in skip:
            continue
        ws = src.get_weights()
        if [w.shape for w in ws] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(ws)
            copied.append(layer.name)
    return copied
