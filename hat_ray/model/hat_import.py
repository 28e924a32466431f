"""Import HAT / fairseq 0.8 checkpoints (``checkpoint_best.pt`` + ``dict.<lang>.txt``).

A HAT checkpoint is a ``torch.save`` dict with ``args`` (argparse.Namespace), ``model`` (state
dict), ``optimizer_history``, ``extra_state`` (pickled fairseq meter objects) and
``last_optimizer_state`` (spec section 8). It is read with ``torch.load(weights_only=True)``: only
``argparse.Namespace`` and inert stand-ins for fairseq's meters may be unpickled; every other
global (``os.system``, ``builtins.eval``, unknown classes) is refused with a DataError, so a
malicious file cannot run code.

The tensors are mapped onto hat-ray's :class:`~hat_ray.model.transformer.Transformer` state dict
(the only layout difference: HAT's fused encoder-decoder ``in_proj`` is split into Q and K/V).
Released SubTransformer checkpoints hold full super-shaped tensors plus the sub-config in ``args``;
the sub-config becomes the checkpoint's ``arch`` while its kind stays "supernet" (extract the
deployable model with :func:`hat_ray.model.extract.extract_subnet`).
"""

from __future__ import annotations

import argparse
import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hat_ray.arch import HAT_KEYS, Arch
from hat_ray.checkpoint import make_checkpoint
from hat_ray.errors import ArchError, ConfigError, DataError
from hat_ray.model.transformer import ModelConfig, Transformer
from hat_ray.space import CHOICE_BOUND, SearchSpace

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq's implicit first four entries
_OVERWRITE_FLAG = "#fairseq:overwrite"


# ---------------------------------------------------------------------------------------------
# fairseq dictionaries
# ---------------------------------------------------------------------------------------------
def read_fairseq_dict(path: str | Path, pad_to: int = 8) -> list[str]:
    """Read a fairseq ``dict.<lang>.txt`` into the token list the model's embedding rows follow.

    Index 0-3 are ``<s>``, ``<pad>``, ``</s>``, ``<unk>``; then one ``token count`` line each
    (the token is everything before the last space; an optional trailing ``#fairseq:overwrite``
    flag may follow the count); then ``madeupword0000``, ``madeupword0001``, ... until the length
    is a multiple of ``pad_to`` (fairseq pads to 8; ``pad_to=1`` disables padding).
    Raises DataError naming the file (and line number) when it is missing or malformed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"dictionary {path} does not exist") from None
    except UnicodeDecodeError:
        raise DataError(f"dictionary {path} is not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"cannot read dictionary {path}: {exc.strerror or exc}") from None
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()  # trailing blank lines cannot shift indices
    tokens = list(SPECIAL_TOKENS)
    for number, line in enumerate(lines, start=1):
        tokens.append(_dict_token(line, path, number))
    index = 0
    while len(tokens) % max(pad_to, 1):
        tokens.append(f"madeupword{index:04d}")
        index += 1
    return tokens


def _dict_token(line: str, path: Path, number: int) -> str:
    """The token of one ``token count [#fairseq:overwrite]`` line (fairseq splits at the last
    space, so tokens may contain spaces)."""
    fields = line.rstrip("\r").rsplit(" ", 1)
    if len(fields) == 2 and fields[1] == _OVERWRITE_FLAG:
        fields = fields[0].rsplit(" ", 1)
    try:
        if len(fields) != 2:
            raise ValueError(line)
        int(fields[1])
    except ValueError:
        raise DataError(
            f"dictionary {path}, line {number}: expected '<token> <count>', got {line[:80]!r}"
        ) from None
    return fields[0]


# ---------------------------------------------------------------------------------------------
# safe loading of the torch.save container
# ---------------------------------------------------------------------------------------------
class InertFairseqObject:
    """Stand-in for a pickled fairseq object: keeps the pickled state as plain data and has no
    behaviour (no __init__, no methods run on load)."""

    fairseq_name = "fairseq.?"
    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.fairseq_name} {self.state!r}>"


class AverageMeter(InertFairseqObject):
    """Inert stand-in for ``fairseq.meters.AverageMeter`` (fairseq 0.8)."""

    fairseq_name = "fairseq.meters.AverageMeter"


class TimeMeter(InertFairseqObject):
    """Inert stand-in for ``fairseq.meters.TimeMeter`` (fairseq 0.8)."""

    fairseq_name = "fairseq.meters.TimeMeter"


class StopwatchMeter(InertFairseqObject):
    """Inert stand-in for ``fairseq.meters.StopwatchMeter`` (fairseq 0.8)."""

    fairseq_name = "fairseq.meters.StopwatchMeter"


# fairseq 0.8's meters module defines exactly these three classes (HAT's trainer pickles them).
STAND_INS: tuple[type[InertFairseqObject], ...] = (AverageMeter, TimeMeter, StopwatchMeter)
_SAFE_GLOBALS: list[Any] = [argparse.Namespace, *((cls, cls.fairseq_name) for cls in STAND_INS)]

_REFETCH = "copy or download it again (HAT's released checkpoint_best.pt files load as they are)"
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module)")
_REFUSED_OTHER = re.compile(r"(unrecognized function|Can only create new object|Can only build)")


def load_hat_file(path: str | Path) -> dict[str, Any]:
    """Unpickle a HAT/fairseq checkpoint container safely (zip or legacy torch.save format).

    Only plain data, tensors, ``argparse.Namespace`` and inert stand-ins for fairseq's meters
    are accepted; any other pickled global is refused (DataError naming the file and the
    global). float16 tensors come back as float32. Missing, truncated or corrupt files raise
    DataError naming the file.
    """
    return _load_container(Path(path))[0]


def _load_container(path: Path) -> tuple[dict[str, Any], int]:
    """(container, number of float16 tensors converted to float32)."""
    if not path.is_file():
        raise DataError(f"HAT checkpoint {path} does not exist; check the path")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unpickling_error(path, str(exc)) from None
    except Exception as exc:  # torch.load raises many types on damaged input
        detail = " ".join(str(exc).split()).split(". ")[0][:160]
        raise DataError(
            f"HAT checkpoint {path} is corrupted, truncated or not a torch checkpoint "
            f"({type(exc).__name__}: {detail}); {_REFETCH}"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a HAT/fairseq checkpoint (top level is {type(obj).__name__}, not a dict)")
    counter = [0]
    return _to_fp32(obj, counter), counter[0]


def _unpickling_error(path: Path, message: str) -> DataError:
    found = _REFUSED_GLOBAL.search(message)
    if found:
        name = found.group(1)
        name = name if "." in name else f"builtins.{name}"  # torch strips the builtins prefix
        return DataError(
            f"HAT checkpoint {path}: refused to load global {name} for safety (a HAT checkpoint "
            "may only contain tensors, plain data, argparse.Namespace and fairseq meters); "
            "the file was not loaded: import only genuine HAT/fairseq checkpoints from a trusted source"
        )
    detail = message.split("WeightsUnpickler error:")[-1].split("Check the documentation of torch.load")[0]
    detail = " ".join(detail.split())[:200]
    if _REFUSED_OTHER.search(message):
        return DataError(f"HAT checkpoint {path}: refused for safety ({detail}); the file was not loaded: "
                         "import only genuine HAT/fairseq checkpoints from a trusted source")
    return DataError(f"HAT checkpoint {path} is corrupted, truncated or not a torch checkpoint ({detail}); {_REFETCH}")


def _to_fp32(obj: Any, counter: list[int]) -> Any:
    """float16 tensors -> float32, recursively through dicts, lists and tuples."""
    if isinstance(obj, Tensor):
        if obj.dtype == torch.float16:
            counter[0] += 1
            return obj.float()
        return obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            obj[key] = _to_fp32(value, counter)
        return obj
    if isinstance(obj, list):
        return [_to_fp32(v, counter) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_to_fp32(v, counter) for v in obj)
    return obj


# ---------------------------------------------------------------------------------------------
# args -> SearchSpace / Arch
# ---------------------------------------------------------------------------------------------
_SUPER_ARGS = (
    "encoder_embed_dim", "decoder_embed_dim", "encoder_ffn_embed_dim", "decoder_ffn_embed_dim",
    "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
)
# hat-ray choice key -> HAT args attribute (HAT's YAML key with '-' -> '_').
CHOICE_ARGS = {
    "encoder_embed_dim": "encoder_embed_choice",
    "decoder_embed_dim": "decoder_embed_choice",
    "encoder_layers": "encoder_layer_num_choice",
    "decoder_layers": "decoder_layer_num_choice",
    "encoder_ffn_embed_dim": "encoder_ffn_embed_dim_choice",
    "decoder_ffn_embed_dim": "decoder_ffn_embed_dim_choice",
    "encoder_self_attention_heads": "encoder_self_attention_heads_choice",
    "decoder_self_attention_heads": "decoder_self_attention_heads_choice",
    "decoder_ende_attention_heads": "decoder_ende_attention_heads_choice",
    "decoder_arbitrary_ende_attn": "decoder_arbitrary_ende_attn_choice",
}
# Model options hat-ray cannot represent: attribute -> (HAT's default, what it would change).
_UNSUPPORTED = {
    "encoder_normalize_before": (False, "pre-LayerNorm encoder"),
    "decoder_normalize_before": (False, "pre-LayerNorm decoder"),
    "encoder_learned_pos": (False, "learned encoder positions"),
    "decoder_learned_pos": (False, "learned decoder positions"),
    "no_token_positional_embeddings": (False, "no positional embeddings"),
    "vocab_original_scaling": (False, "embedding scale sqrt(super dim)"),
    "adaptive_softmax_cutoff": (None, "adaptive softmax"),
    "activation_fn": ("relu", "a non-ReLU activation"),
}
_META_ARGS = (
    "arch", "task", "source_lang", "target_lang", "train_subtransformer", "share_all_embeddings",
    "share_decoder_input_output_embed", *_SUPER_ARGS, "qkv_dim", "dropout", "attention_dropout",
    "max_source_positions", "max_target_positions", "criterion", "label_smoothing", "optimizer",
    "lr", "max_update", "fp16",
)


def _unsupported_problems(args: argparse.Namespace) -> list[str]:
    problems = []
    for name, (default, what) in _UNSUPPORTED.items():
        value = getattr(args, name, None)
        if value is not None and value != default:
            problems.append(f"{name}={value!r} ({what})")
    return problems


def space_from_args(args: argparse.Namespace, source: str = "HAT args", arch: Arch | None = None) -> SearchSpace:
    """Build the search space a HAT checkpoint was trained with from its ``args``.

    Super dims come from ``encoder_embed_dim`` ... ``qkv_dim``; choices from the ``*_choice``
    lists. A SubTransformer-training run (``train_subtransformer``) carries only HAT's unused
    default choice lists, so its space is the super dims plus the sub-config's values (a warning
    suggests passing the real space). DataError when args lack dims or describe no valid space.
    """
    missing = [name for name in _SUPER_ARGS if getattr(args, name, None) is None]
    if missing:
        raise DataError(f"{source}: args lack {', '.join(missing)}; pass the search space explicitly (--space)")
    try:
        sup = _super_from_args(args)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: the args hold a malformed model dimension ({exc}); pass --space") from None
    if getattr(args, "train_subtransformer", False):
        log.warning("%s is a SubTransformer training run: its search-space choices are HAT's unused "
                    "defaults; using the super dims and the sub-config (pass --space for the real space)", source)
        choices = _minimal_choices(sup, arch)
    else:
        choices = {key: _choice_list(args, name, source) for key, name in CHOICE_ARGS.items()}
    try:
        return SearchSpace.from_dict({"name": "imported", "super": sup, "choices": choices}, source=source)
    except ConfigError as exc:
        raise DataError(f"{source}: the args do not describe a valid search space ({'; '.join(exc.problems)}); "
                        "pass the search space explicitly (--space)") from None


def _super_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """SearchSpace ``super`` fields from HAT's args (HAT's defaults where an option is absent)."""
    sup: dict[str, Any] = {name: int(getattr(args, name)) for name in _SUPER_ARGS}
    qkv = getattr(args, "qkv_dim", None)  # HAT: None means qkv = embed dim
    sup["qkv_dim"] = int(qkv) if qkv is not None else sup["encoder_embed_dim"]
    sup["share_embeddings"] = bool(getattr(args, "share_all_embeddings", False))
    sup["dropout"] = float(getattr(args, "dropout", 0.1))
    sup["attention_dropout"] = float(getattr(args, "attention_dropout", 0.0) or 0.0)
    sup["max_positions"] = max(int(getattr(args, "max_source_positions", None) or 1024),
                               int(getattr(args, "max_target_positions", None) or 0))
    sup["seq_len"] = 23 if "iwslt" in str(getattr(args, "arch", "")) else 30  # HAT's T per task
    return sup


def _choice_list(args: argparse.Namespace, name: str, source: str) -> list[int]:
    values = getattr(args, name, None)
    if not isinstance(values, (list, tuple)) or not values:
        raise DataError(f"{source}: args.{name} is missing or not a list ({values!r}); pass --space")
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        raise DataError(f"{source}: args.{name} must list integers, got {values!r}") from None


def _minimal_choices(sup: Mapping[str, Any], arch: Arch | None) -> dict[str, list[int]]:
    """Choices holding the super value (arbitrary attention: -1) plus the sub-config's values."""
    base: dict[str, set[int]] = {key: {int(sup[dim])} for key, dim in CHOICE_BOUND.items()}
    base["decoder_arbitrary_ende_attn"] = {-1}
    if arch is not None:
        for key, value in arch.to_dict().items():
            if key in base:
                base[key] |= set(value) if isinstance(value, list) else {value}
    return {key: sorted(values, reverse=key != "decoder_arbitrary_ende_attn") for key, values in base.items()}


def arch_from_args(args: argparse.Namespace, source: str = "HAT args") -> Arch | None:
    """The SubTransformer config stored in ``args`` (HAT's ``*_subtransformer`` attributes), or
    None when absent. A partial config is ignored with a warning; an invalid one is a DataError."""
    values = {key: getattr(args, key.replace("-", "_"), None) for key in sorted(HAT_KEYS)}
    present = {key: value for key, value in values.items() if value is not None}
    if not present:
        return None
    if len(present) < len(values):
        absent = sorted(key.replace("-", "_") for key in values if key not in present)
        log.warning("%s: incomplete SubTransformer config in args (no %s); importing without an arch",
                    source, ", ".join(absent))
        return None
    try:
        return Arch.from_hat(present, source=f"{source} (SubTransformer config)")
    except ArchError as exc:
        raise DataError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# tensor mapping
# ---------------------------------------------------------------------------------------------
_LAYER_PARAMS = tuple(
    f"{module}.{p}"
    for module in ("self_attn_layer_norm", "fc1", "fc2", "final_layer_norm", "self_attn.out_proj")
    for p in ("weight", "bias")
) + ("self_attn.in_proj_weight", "self_attn.in_proj_bias")
_CROSS_PARAMS = (
    "encoder_attn.in_proj_weight", "encoder_attn.in_proj_bias", "encoder_attn.out_proj.weight",
    "encoder_attn.out_proj.bias", "encoder_attn_layer_norm.weight", "encoder_attn_layer_norm.bias",
)
# Buffers fairseq saves that carry no weights (sinusoid placeholders, format versions); the
# plural ``embed_positions.weights`` is an old persisted sinusoid table fairseq itself drops.
_IGNORED = re.compile(r"^(encoder|decoder)\.(version|embed_positions\._float_tensor|embed_positions\.weights)$")


def expected_hat_keys(n_enc: int, n_dec: int, shared: bool, tied_output: bool) -> set[str]:
    """The weight keys a HAT state dict must hold for these depths and embedding sharing."""
    keys = {"encoder.embed_tokens.weight"}
    if not shared:
        keys.add("decoder.embed_tokens.weight")
        if not tied_output:
            keys.add("decoder.embed_out")
    keys |= {f"encoder.layers.{i}.{p}" for i in range(n_enc) for p in _LAYER_PARAMS}
    keys |= {f"decoder.layers.{i}.{p}" for i in range(n_dec) for p in (*_LAYER_PARAMS, *_CROSS_PARAMS)}
    return keys


def map_hat_state_dict(state: Mapping[str, Any], n_enc: int, n_dec: int, qkv_dim: int, shared: bool,
                       tied_output: bool = False, source: str = "HAT checkpoint") -> tuple[dict[str, Tensor], dict[str, str]]:
    """HAT state dict -> (hat-ray Transformer state dict, hat-ray key -> HAT key for messages).

    DataError listing every missing, unexpected or malformed key at once.
    """
    expected = expected_hat_keys(n_enc, n_dec, shared, tied_output)
    optional = {"decoder.embed_tokens.weight"} if shared else set()
    present = set(state)
    problems = _list_problem("missing", sorted(expected - present, key=_natural))
    unexpected = [k for k in present - expected - optional if not _IGNORED.match(str(k))]
    problems += _list_problem("unexpected", sorted(map(str, unexpected), key=_natural))
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    # the encoder embedding first: a tied decoder copy is checked against it
    for key in sorted(present & (expected | optional), key=lambda k: (k != "encoder.embed_tokens.weight", k)):
        value = state[key]
        if not isinstance(value, Tensor):
            problems.append(f"{key} is a {type(value).__name__}, not a tensor")
        elif ".encoder_attn.in_proj_" in key:
            problems += _split_cross(key, value, qkv_dim, out, origin)
        else:
            _map_plain(key, value, shared, out, origin, problems)
    if problems:
        raise DataError(f"{source}: the state dict does not match a HAT SuperTransformer: " + "; ".join(problems))
    if tied_output and not shared:
        out["output_proj"], origin["output_proj"] = out["decoder_embed"].clone(), "decoder.embed_tokens.weight"
    return out, origin


def _map_plain(key: str, value: Tensor, shared: bool, out: dict[str, Tensor], origin: dict[str, str],
               problems: list[str]) -> None:
    if key == "encoder.embed_tokens.weight":
        names = ("encoder_embed", "decoder_embed") if shared else ("encoder_embed",)
    elif key == "decoder.embed_tokens.weight":
        if shared:  # fairseq saves the tied matrix under both names: it must be the same one
            _check_tied(value, out, problems)
            return
        names = ("decoder_embed",)
    elif key == "decoder.embed_out":
        names = ("output_proj",)
    else:
        stack, rest = key.split(".", 1)  # "encoder.layers.3.fc1.weight" -> "encoder_layers.3.fc1.weight"
        names = (f"{stack}_{rest}",)
    for name in names:
        out[name], origin[name] = value, key


def _check_tied(decoder: Tensor, out: dict[str, Tensor], problems: list[str]) -> None:
    encoder = out.get("encoder_embed")
    if encoder is not None and (encoder.shape != decoder.shape or not torch.equal(encoder, decoder)):
        problems.append("share_all_embeddings is set but encoder.embed_tokens.weight and "
                        "decoder.embed_tokens.weight differ")


def _split_cross(key: str, value: Tensor, qkv: int, out: dict[str, Tensor], origin: dict[str, str]) -> list[str]:
    """Fused enc-dec ``in_proj`` rows Q|K|V -> ``q_proj`` (rows [:q]) and ``kv_proj`` (rows [q:])."""
    if value.dim() < 1 or value.shape[0] != 3 * qkv:
        return [f"{key} has shape {tuple(value.shape)}, expected {3 * qkv} rows (3 x qkv_dim {qkv})"]
    prefix = key.replace("decoder.layers.", "decoder_layers.").rsplit("in_proj_", 1)[0]
    kind = key.rsplit("in_proj_", 1)[1]  # "weight" or "bias"
    for part, rows in (("q", slice(0, qkv)), ("kv", slice(qkv, 3 * qkv))):
        name = f"{prefix}{part}_proj_{kind}"
        out[name] = value[rows].clone()
        origin[name] = f"{key}[{rows.start}:{rows.stop}]"
    return []


def _natural(key: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _list_problem(what: str, keys: list[str], limit: int = 12) -> list[str]:
    if not keys:
        return []
    shown = ", ".join(keys[:limit]) + (f" ... ({len(keys) - limit} more)" if len(keys) > limit else "")
    return [f"{len(keys)} {what} key{'s' if len(keys) != 1 else ''}: {shown}"]


def _load_model(space: SearchSpace, state: dict[str, Tensor], origin: Mapping[str, str], source: str) -> Transformer:
    """A Transformer with ``space``'s super shapes holding ``state``; DataError listing every
    tensor whose shape differs from the space's."""
    src_rows, tgt_rows = int(state["encoder_embed"].shape[0]), int(state["decoder_embed"].shape[0])
    try:
        model = Transformer(ModelConfig.for_space(space, src_rows, tgt_rows))
    except ValueError as exc:
        raise DataError(f"{source}: {exc}") from None
    wanted = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    bad = {
        origin[name]: f"{origin[name]} {tuple(t.shape)} (space {space.name} needs {wanted[name]})"
        for name, t in state.items()
        if tuple(t.shape) != wanted[name]
    }
    if bad:
        texts = [bad[key] for key in sorted(bad, key=_natural)]
        shown = "; ".join(texts[:12]) + (f" ... ({len(texts) - 12} more)" if len(texts) > 12 else "")
        raise DataError(f"{source}: {len(texts)} tensor shape(s) differ from the search space's super shapes: {shown}")
    model.load_state_dict(state, strict=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# vocabularies
# ---------------------------------------------------------------------------------------------
def _read_sized(path: Path, rows: int) -> list[str] | None:
    """The dictionary if its (padded, else unpadded) length equals ``rows``; None otherwise."""
    tokens = read_fairseq_dict(path)
    if len(tokens) == rows:
        return tokens
    raw = read_fairseq_dict(path, pad_to=1)
    return raw if len(raw) == rows else None


def _dict_files(dict_dir: Path, args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """Candidate (source, target) dictionary pairs, most likely first."""
    src, tgt = getattr(args, "source_lang", None), getattr(args, "target_lang", None)
    if src and tgt:
        return [(dict_dir / f"dict.{src}.txt", dict_dir / f"dict.{tgt}.txt")]
    found = sorted(dict_dir.glob("dict.*.txt"))
    if len(found) == 1:
        return [(found[0], found[0])]
    if len(found) != 2:
        names = ", ".join(p.name for p in found) or "none"
        raise DataError(f"{dict_dir}: args name no source/target language and the folder holds {names}; "
                        "expected exactly two dict.<lang>.txt files")
    return [(found[0], found[1]), (found[1], found[0])]


def read_vocab(dict_dir: str | Path, args: argparse.Namespace, src_rows: int, tgt_rows: int,
               shared: bool) -> dict[str, list[str]]:
    """``{"src": tokens, "tgt": tokens}`` from ``dict_dir``; DataError naming the file and both
    sizes when a dictionary does not match its embedding's rows."""
    dict_dir = Path(dict_dir)
    if not dict_dir.is_dir():
        raise DataError(f"dictionary folder {dict_dir} does not exist")
    pairs = _dict_files(dict_dir, args)
    fits = []
    for src_path, tgt_path in pairs:
        for path in (src_path, tgt_path):
            if not path.is_file():
                raise DataError(f"dictionary {path} does not exist (languages from the checkpoint's args)")
        src, tgt = _read_sized(src_path, src_rows), _read_sized(tgt_path, tgt_rows)
        if src is not None and tgt is not None:
            fits.append({"src": src, "tgt": tgt})
    if len(fits) == 2 and fits[0] != fits[1] and not shared:
        raise DataError(f"{dict_dir}: cannot tell the source from the target dictionary (args name no languages "
                        "and both files fit); add source_lang/target_lang to the checkpoint's args")
    if fits:
        return fits[0]
    src_path, tgt_path = pairs[0]
    src_ok = _read_sized(src_path, src_rows) is not None
    path, rows, side = (tgt_path, tgt_rows, "decoder") if src_ok else (src_path, src_rows, "encoder")
    raise DataError(f"dictionary {path} has {len(read_fairseq_dict(path))} entries (padded to a multiple "
                    f"of 8) but the checkpoint's {side} embedding has {rows} rows")


# ---------------------------------------------------------------------------------------------
# the import
# ---------------------------------------------------------------------------------------------
def import_hat_checkpoint(ckpt_path: str | Path, dict_dir: str | Path | None = None,
                          space: SearchSpace | None = None) -> dict[str, Any]:
    """Read a HAT/fairseq checkpoint (and optionally its ``dict.*.txt`` files) into a hat-ray
    checkpoint dict (see :mod:`hat_ray.checkpoint`; kind "supernet", super-shaped tensors).

    ``space``: check the tensors against this space's super shapes; None builds the space from
    the checkpoint's args. ``dict_dir``: read and size-check the dictionaries (vocab None
    without it). The args' SubTransformer config, if any, becomes ``arch``. Every problem is a
    DataError naming the file.
    """
    path = Path(ckpt_path)
    container, n_half = _load_container(path)
    args = _container_args(container, path)
    unsupported = _unsupported_problems(args)
    if unsupported:
        raise DataError(f"{path}: hat-ray cannot represent this model: {', '.join(unsupported)}")
    arch = arch_from_args(args, source=str(path))
    space = _resolve_space(space, args, arch, path)
    shared = space.super.share_embeddings
    tied = not shared and bool(getattr(args, "share_decoder_input_output_embed", False))
    state, origin = map_hat_state_dict(container["model"], space.super.encoder_layers, space.super.decoder_layers,
                                       space.super.qkv_dim, shared, tied, source=str(path))
    model = _load_model(space, state, origin, str(path))
    if arch is not None:
        _check_arch(model, space, arch, path)
    vocab = None
    if dict_dir is not None:
        vocab = read_vocab(dict_dir, args, model.config.src_vocab, model.config.tgt_vocab, shared)
    meta = _meta(path, args, container, n_half)
    log.info("imported %s: %d float16 tensors converted to float32", path, n_half)
    return make_checkpoint(model, space, vocab=vocab, arch=arch, meta=meta)


def _container_args(container: Mapping[str, Any], path: Path) -> argparse.Namespace:
    missing = [key for key in ("model", "args") if key not in container]
    if missing:
        hint = ("it is a hat-ray checkpoint already: pass it to hat-ray directly"
                if container.get("format") == "hat-ray-checkpoint"
                else "give HAT's checkpoint_best.pt or a fairseq 0.8 checkpoint")
        raise DataError(f"{path} is not a HAT/fairseq checkpoint: it lacks {', '.join(missing)} "
                        f"(keys: {', '.join(map(str, list(container)[:8]))}); {hint}")
    args = container["args"]
    if not isinstance(args, argparse.Namespace):
        raise DataError(f"{path}: 'args' is a {type(args).__name__}, expected argparse.Namespace (fairseq 0.8)")
    if not isinstance(container["model"], Mapping):
        raise DataError(f"{path}: 'model' is a {type(container['model']).__name__}, expected a state dict")
    return args


def _resolve_space(space: SearchSpace | None, args: argparse.Namespace, arch: Arch | None, path: Path) -> SearchSpace:
    if space is None:
        return space_from_args(args, source=str(path), arch=arch)
    ckpt_shared = getattr(args, "share_all_embeddings", None)
    if ckpt_shared is not None and bool(ckpt_shared) != space.super.share_embeddings:
        raise DataError(f"{path}: the checkpoint has share_all_embeddings={bool(ckpt_shared)} but space "
                        f"{space.name} has share_embeddings={space.super.share_embeddings}")
    return space


def _check_arch(model: Transformer, space: SearchSpace, arch: Arch, path: Path) -> None:
    try:
        model.resolve(arch)
    except ValueError as exc:
        raise DataError(f"{path}: the SubTransformer config in args does not fit the tensors ({exc})") from None
    problems = space.problems(arch)
    if problems:
        log.warning("%s: the SubTransformer config is outside space %s: %s", path, space.name, "; ".join(problems))


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def _meta(path: Path, args: argparse.Namespace, container: Mapping[str, Any], n_half: int) -> dict[str, Any]:
    hat_args = {}
    for name in _META_ARGS:
        value = getattr(args, name, None)
        if value is not None and _plain(value):
            hat_args[name] = list(value) if isinstance(value, tuple) else value
    meta: dict[str, Any] = {"imported_from": str(path), "hat_args": hat_args, "float16_tensors": n_half}
    history = container.get("optimizer_history")
    if isinstance(history, list) and history and isinstance(history[-1], Mapping):
        updates = history[-1].get("num_updates")
        if isinstance(updates, int):
            meta["num_updates"] = updates
    extra = container.get("extra_state")
    iterator = extra.get("train_iterator") if isinstance(extra, Mapping) else None
    if isinstance(iterator, Mapping) and isinstance(iterator.get("epoch"), int):
        meta["epoch"] = iterator["epoch"]
    return meta
