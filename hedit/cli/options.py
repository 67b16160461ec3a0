"""Options shared by commands, and options built from the settings dataclasses of ``hedit.config``: a
field's default, help and flag come from the dataclass, so the command line never restates a default.
Values are checked by the dataclass itself (one ``hedit: error:`` line), not by click."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

import click

from hedit.config import Settings
from hedit.errors import HeditError
from hedit.neurons import check_alpha


def _floats(value: Any, flag: str) -> tuple[float, ...]:
    if isinstance(value, tuple):
        return value
    parts = [p.strip() for p in str(value).split(",")]
    if any(not p for p in parts) and str(value).strip():
        raise HeditError(f"{flag} takes comma-separated numbers, got {value!r} (an empty item)")
    try:
        return tuple(float(p) for p in parts if p)
    except ValueError:
        raise HeditError(f"{flag} takes comma-separated numbers, got {value!r}") from None


def _strings(value: Any, flag: str = "the option") -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    parts = tuple(p.strip() for p in str(value).split(","))
    if any(not p for p in parts) and str(value).strip():
        raise HeditError(f"{flag} takes comma-separated names, got {value!r} (an empty item)")
    return tuple(p for p in parts if p)


def _base(kind: Any) -> Any:
    if typing.get_origin(kind) in (typing.Union, __import__("types").UnionType):
        return next(a for a in typing.get_args(kind) if a is not type(None))
    return kind


def settings_options(cls: type[Settings], exclude: tuple[str, ...] = (), **defaults: Any) -> Callable:
    """A decorator adding one click option per field of ``cls`` (those with ``cli`` metadata on, minus
    ``exclude``); ``defaults`` replaces a field's default for this command only (documented there)."""
    hints = typing.get_type_hints(cls)

    def decorate(f: Callable) -> Callable:
        for fld in reversed(dataclasses.fields(cls)):
            meta = fld.metadata
            if not meta.get("cli", True) or fld.name in exclude:
                continue
            default = defaults.get(fld.name, cls.defaults()[fld.name])
            kind = _base(hints[fld.name])
            flag = meta.get("flag") or f"--{fld.name.replace('_', '-')}"
            kw: dict[str, Any] = {"help": meta.get("help", ""), "show_default": True}
            if kind is bool and default:
                kw["help"] = meta.get("flag_help") or f"Turn off: {meta.get('help', '')}"
            if kind is bool:
                if default:
                    kw.update(is_flag=True, flag_value=False, default=True, show_default=False)
                else:
                    kw.update(is_flag=True, default=False, show_default=False)
            elif typing.get_origin(kind) is tuple:
                text = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
                # an empty default stays None, so that an empty value given (--lm-eval '') is told apart
                kw.update(type=str, default=text or None, show_default=bool(text))
            else:
                kw.update(type=kind, default=default)
            f = click.option(flag, fld.name, **kw)(f)
        return f

    return decorate


EMPTY_MEANS_NONE = ("suites",)  # list settings where an empty value is a choice ("--suites ''": capability only)


def build(cls: type[Settings], kwargs: dict[str, Any], **extra: Any) -> Any:
    """An instance of ``cls`` from a command's keyword arguments (its fields are taken out of ``kwargs``)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for fld in dataclasses.fields(cls):
        if fld.name in extra:
            values[fld.name] = extra[fld.name]
        elif fld.name in kwargs:
            value = kwargs.pop(fld.name)
            kind = _base(hints[fld.name])
            if typing.get_origin(kind) is tuple and value is None:
                continue  # not given: the field's own default
            if typing.get_origin(kind) is tuple:
                item = typing.get_args(kind)[0]
                flag = fld.metadata.get("flag") or f"--{fld.name.replace('_', '-')}"
                if isinstance(value, str) and not value.strip() and fld.name not in EMPTY_MEANS_NONE:
                    what = "numbers" if item is float else "names"
                    raise HeditError(f"{flag} takes comma-separated {what}, got an empty value")
                value = _floats(value, flag) if item is float else _strings(value, flag)
            values[fld.name] = value
    return cls(**values)


def _alpha(ctx, param, value):
    if value is not None:
        check_alpha(value, allow_negative=True)  # the sign is checked with --allow-negative-alpha later
    return value


def _device(ctx, param, value):
    from hedit.model.load import check_device

    return check_device(value)


HUB_NEURONS, FORCE, CHECKED = "hedit.hub_neurons", "hedit.force_neurons", "hedit.found_on_checked"


def _found_on(ctx, name: str, value):
    """Once the model, ``--neurons`` and ``--force`` are all parsed (whichever comes last): a neuron set
    fetched from the Hub must have been found on the model named (``hedit.ship.neuron_hub``). With
    ``--force`` a copy of it carries the warning into what the command writes. Returns ``value``, or the
    copy's path when ``value`` is the neurons file."""
    params = dict(ctx.params) | {name: value}
    force = ctx.meta.get(FORCE)
    source = params.get("source") or params.get("model")
    spec = ctx.meta.get(HUB_NEURONS)
    if spec is None or ctx.meta.get(CHECKED) or source is None or "neurons" not in params or force is None:
        return value
    ctx.meta[CHECKED] = True
    from hedit.neurons import NeuronSet
    from hedit.ship.neuron_hub import check_found_on, forced_copy

    path = params["neurons"]
    try:
        warning = check_found_on(NeuronSet.load(path), source, force)
    except HeditError as e:
        raise click.ClickException(str(e)) from None
    if warning is None:
        return value
    click.echo(f"warning: {warning}", err=True)
    copy = str(forced_copy(path, spec, warning))
    if name == "neurons":
        return copy
    ctx.params["neurons"] = copy
    return value


def _neurons(ctx, param, value):
    """A local neurons file as it is; ``owner/name[@revision]`` (a neuron-set repo on the Hub) fetched
    into the Hub cache. A missing ``dir/file.json`` stays a (missing) local file, not a Hub name."""
    from pathlib import Path

    from hedit.io.hub import is_repo_id

    if value is not None and not Path(value).exists() and is_repo_id(value) and not value.endswith(".json"):
        from hedit.ship.neuron_hub import fetch_neurons

        try:
            ctx.meta[HUB_NEURONS] = value
            value = str(fetch_neurons(value))
        except HeditError as e:
            raise click.ClickException(f"--neurons {value}: {e}") from None
    return _found_on(ctx, "neurons", value)


def _force(ctx, param, value):
    ctx.meta[FORCE] = bool(value)
    return _found_on(ctx, "force", value)


def _model_arg(ctx, param, value):
    return _found_on(ctx, param.name, value)


SOURCE = click.argument("source", type=click.Path(path_type=str), callback=_model_arg)
MODEL = click.argument("model", type=str, callback=_model_arg)


def NEURONS(f):  # noqa: N802 (a decorator like the options beside it)
    """``--neurons FILE | owner/name[@revision]`` and ``--force`` (apply a Hub neuron set found on another
    model or revision)."""
    f = click.option(
        "--force",
        is_flag=True,
        expose_value=False,
        callback=_force,
        help="Apply a neuron set from the Hub that was found on another model or revision (a fine-tune of it).",
    )(f)
    return click.option(
        "--neurons",
        "neurons",
        required=True,
        type=str,
        callback=_neurons,
        help="Neuron-set file (neurons.json), or a neuron-set repo on the Hub: owner/name[@revision].",
    )(f)


STRENGTH = click.option(
    "--strength",
    type=float,
    default=None,
    help="A fitted set (per-neuron alphas, tune --method fit) at strength T: each alpha_j becomes "
    "1 + T (alpha_j - 1) (1: as fitted, 0: no edit).",
)


def with_strength(neurons: str, strength: float | None) -> str:
    """``neurons`` itself, or with ``--strength`` a temporary copy of it at that strength (the user's file is
    never changed); the copy's provenance records the strength."""
    if strength is None:
        return neurons
    from hedit.neurons import NeuronSet
    from hedit.ship.neuron_hub import transformed_copy

    NeuronSet.load(neurons).at_strength(strength)  # its one-line error before any copy
    return str(transformed_copy(neurons, lambda ns: ns.at_strength(strength)))


ALPHA = click.option(
    "--alpha",
    type=float,
    default=None,
    callback=_alpha,
    help="Scale for chosen neurons (0 silences, 1 leaves unchanged). A neuron's own alpha in the file overrides it.",
)
NEG = click.option(
    "--allow-negative-alpha", "allow_negative", is_flag=True, help="Accept a negative alpha (flips the neurons' sign)."
)
OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace a previous hedit output at --out.")
DEVICE = click.option(
    "--device",
    default="cpu",
    show_default=True,
    callback=_device,
    help="cpu, cuda, cuda:1, mps; checked before any work starts.",
)
TARGET = click.option(
    "--target",
    type=click.Choice(["auto", "down", "up"]),
    default="auto",
    show_default=True,
    help="Which weight carries the edit: down_proj columns, or up_proj rows (exact for quantized "
    "formats, through their per-channel or per-block scales). auto: up for quantized "
    "sources, down otherwise.",
)


def placement_options(f: Callable) -> Callable:
    """--device-map, --max-memory and --offload-folder: a model larger than one device, placed by accelerate."""
    opts = [
        click.option(
            "--device-map",
            default=None,
            metavar="auto|balanced|sequential",
            help="Spread the model over the GPUs (and CPU, and disk) with accelerate's device map; "
            "the intervention's and the CETT hooks work across devices.",
        ),
        click.option(
            "--max-memory", default=None, metavar="0=20GiB,cpu=60GiB", help="Memory per device for --device-map."
        ),
        click.option(
            "--offload-folder",
            default=None,
            type=click.Path(path_type=str),
            help="Where --device-map offloads layers that fit on no device.",
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def placement_from(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The placement options (taken out of ``kwargs``) as load_model's keyword arguments."""
    from hedit.model.load import parse_max_memory

    device_map, max_memory, folder = (kwargs.pop(k) for k in ("device_map", "max_memory", "offload_folder"))
    if device_map is None:
        if max_memory or folder:
            raise HeditError("--max-memory and --offload-folder need --device-map")
        return {}
    parse_max_memory(max_memory)  # a bad value fails here, before any work
    return {"device_map": device_map, "max_memory": max_memory, "offload_folder": folder}


QUIET = click.option("--quiet", is_flag=True, help="No progress bar.")


def judge_options(f: Callable) -> Callable:
    opts = [
        click.option(
            "--judge-url",
            default=None,
            metavar="URL",
            help="Optional LLM judge: an OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1). "
            "Default: the rule judge.",
        ),
        click.option("--judge-model", default=None, help="Model name for the LLM judge."),
        click.option(
            "--judge-key-env",
            default="OPENAI_API_KEY",
            show_default=True,
            help="Environment variable holding the judge's API key.",
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def judge_from(kwargs: dict[str, Any]):
    """The judge the judge options ask for (taken out of ``kwargs``)."""
    from hedit.score.llm_judge import make_judge

    return make_judge(kwargs.pop("judge_url"), kwargs.pop("judge_model"), kwargs.pop("judge_key_env"))


def suite_files(pairs) -> dict[str, str]:
    out = {}
    for p in pairs:
        name, sep, path = p.partition("=")
        if not sep or not name or not path:
            raise HeditError(f"--suite-file takes NAME=PATH, got {p!r}")
        out[name.strip()] = path
    return out


SUITE_FILE = click.option(
    "--suite-file",
    "suite_files",
    multiple=True,
    metavar="NAME=PATH",
    help="Use PATH for suite NAME instead of the bundled set: a file (JSONL, JSON, CSV, Parquet; FaithEval, FalseQA, "
    "SycophancyEval, AdvBench, HarmBench, JailbreakBench layouts) or a Hub dataset's split (hf://datasets/...).",
)
