"""Checkpoints: plain data (weights, configs, codec, sampler, trainer state) written atomically
and read with ``torch.load(weights_only=True)`` only, so a checkpoint can never run code.

Integrity: every checkpoint carries a sha256 ``digest`` of its content (tensors byte for byte,
plain values by ``repr``), checked on load, so a flipped byte in the weights is refused instead
of silently loaded. A checkpoint without a digest is refused as well (deleting the key would
otherwise switch the check off), unless the environment variable ``DISCRETE_RAE_TRUST_CHECKPOINT=1``
says to load it anyway (hand-made or foreign checkpoints; a warning is logged). An environment
variable rather than a flag because every command that reads a run (train --resume, sample,
evaluate, compare, optimize, interpolate, image-table) would otherwise need one. The keys a
run's checkpoint needs are checked on load (:func:`load_run_checkpoint`), so a hand-made one
without them is refused in one line. The codec (grammar text / alphabet) is checked against the
hashes recorded at training time, so a checkpoint whose grammar or vocabulary was edited is
refused too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .io import atomic_write, sha256_text, with_path, write_text  # noqa: F401  (write_text re-exported)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_DIGEST_KEY = "digest"
#: Set to 1 to load a checkpoint that has no digest (nothing can then detect altered weights).
TRUST_ENV = "DISCRETE_RAE_TRUST_CHECKPOINT"
#: Top-level keys every checkpoint written by the trainer holds, with their types.
REQUIRED_KEYS: dict[str, type] = {"domain": str, "model_name": str, "config": dict, "codec": dict,
                                  "model_state": dict, "trainer": dict}
_CONFIG_SECTIONS = ("model", "train", "data", "eval")


from .errors import CheckpointError  # noqa: E402,F401  (defined with the other user errors; re-exported)


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``.

    A crash at any moment leaves either the previous checkpoint or the new one, never a mix
    (:func:`discrete_rae.io.atomic_write`, durable: the folder is fsynced too). An OSError
    names ``path`` (a full disk reports ENOSPC without a file name).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise with_path(err, path) from None
    body = {"format_version": FORMAT_VERSION, **payload}
    body.pop(_DIGEST_KEY, None)
    body[_DIGEST_KEY] = content_digest(body)
    atomic_write(path, lambda fh: torch.save(body, fh), durable=True)


def remove_stale_temporaries(path: Path) -> int:
    """Delete ``.path.name.*.tmp`` files (``path.name.*.tmp`` from older versions) left by a process
    killed inside :func:`save_atomic`."""
    path = Path(path)
    removed = 0
    for tmp in [*path.parent.glob("." + path.name + ".*.tmp"), *path.parent.glob(path.name + ".*.tmp")]:
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            pass
    if removed:
        log.info("removed %d unfinished checkpoint file(s) next to %s", removed, path)
    return removed


def content_digest(obj: Any) -> str:
    """sha256 over a nest of dicts/lists/tensors/plain values, independent of dict order."""
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k != _DIGEST_KEY}
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    """Feed ``obj`` into the hash ``h``; containers are framed so that nesting is unambiguous."""
    if isinstance(obj, dict):
        h.update(b"{")
        for key in sorted(obj, key=repr):
            h.update(repr(key).encode())
            _feed(h, obj[key])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[" if isinstance(obj, list) else b"(")
        for item in obj:
            _feed(h, item)
        h.update(b"]")
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    else:
        h.update(repr(obj).encode())


def codec_fingerprint(state: dict[str, Any]) -> str:
    """sha256 of a codec's ``state_dict()`` (grammar text, alphabet, lengths)."""
    return sha256_text(json.dumps(state, sort_keys=True, default=str))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely; raise :class:`CheckpointError` naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    payload = _torch_load(path)
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} is not a discrete_rae checkpoint (format {FORMAT_VERSION})")
    recorded = payload.get(_DIGEST_KEY)
    if recorded is None:
        if os.environ.get(TRUST_ENV, "") != "1":
            raise CheckpointError(f"checkpoint {path} has no sha256 digest, so altered weights could not be "
                                  f"detected; refused (set {TRUST_ENV}=1 to load it anyway)")
        log.warning("checkpoint %s has no digest; loaded because %s=1", path, TRUST_ENV)
    elif recorded != content_digest(payload):
        raise CheckpointError(f"checkpoint {path} is corrupted (its content does not match its sha256 digest)")
    verify_codec(payload, path)
    return payload


def load_run_checkpoint(path: Path) -> dict[str, Any]:
    """:func:`load_checkpoint` of a run's ``checkpoint.pt``, with its keys checked as well."""
    payload = load_checkpoint(path)
    check_structure(payload, Path(path))
    return payload


def check_structure(payload: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint that lacks a key (or has one of the wrong type) that loading needs."""
    for key, typ in REQUIRED_KEYS.items():
        if key not in payload:
            raise CheckpointError(f"checkpoint {path} lacks the key {key!r}; not a complete discrete_rae "
                                  "checkpoint")
        if not isinstance(payload[key], typ):
            raise CheckpointError(f"checkpoint {path}: {key!r} is a {type(payload[key]).__name__}, "
                                  f"expected a {typ.__name__}")
    config = payload["config"]
    for section in _CONFIG_SECTIONS:
        if not isinstance(config.get(section), dict):
            raise CheckpointError(f"checkpoint {path} lacks the config section {section!r}")
    if "kind" not in payload["codec"]:
        raise CheckpointError(f"checkpoint {path}: its codec lacks the key 'kind'")
    for name, state in (payload.get("samplers") or {}).items():
        if not isinstance(state, dict) or "name" not in state or "dim" not in state:
            raise CheckpointError(f"checkpoint {path}: the state of sampler {name!r} is incomplete")


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into a one-line CheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise CheckpointError(f"checkpoint {path} holds objects other than plain data and tensors; refused "
                                  "(checkpoints are loaded with weights_only=True and can never run code)") from None
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted ({_first_line(err)})") from None
    except Exception as err:  # noqa: BLE001 - torch.load on damaged bytes raises many types
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def verify_codec(payload: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint whose codec differs from the one recorded when it was trained.

    Grammar codecs: the hash of the stored grammar text must equal the grammar hash recorded in
    the codec and in ``meta``. Every codec: its fingerprint must equal ``meta["codec_hash"]``
    (when recorded). A mismatch means the grammar or vocabulary was edited after training.
    """
    codec, meta = payload.get("codec"), payload.get("meta") or {}
    if not isinstance(codec, dict):
        return
    recorded = meta.get("codec_hash")
    if recorded is not None and recorded != codec_fingerprint(codec):
        raise CheckpointError(f"checkpoint {path}: its {codec.get('kind', '?')} codec (grammar or vocabulary) "
                              "differs from the one the model was trained with; refused")
    if codec.get("kind") == "grammar":
        _verify_grammar(codec, meta, path)


def _verify_grammar(codec: dict[str, Any], meta: dict[str, Any], path: Path) -> None:
    from .grammar import Grammar, GrammarError

    try:
        actual = Grammar.from_string(codec["grammar"]).hash
    except (GrammarError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path}: its grammar cannot be read ({_first_line(err)})") from None
    for where, expected in (("codec", codec.get("grammar_hash")), ("run", meta.get("grammar_hash"))):
        if expected is not None and expected != actual:
            raise CheckpointError(f"checkpoint {path}: its grammar (hash {actual[:12]}) is not the grammar the "
                                  f"model was trained with (hash {str(expected)[:12]}, recorded in the {where}); "
                                  "refused")
