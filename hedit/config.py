"""Every setting of hedit's stages, each default stated once.

The Python API takes these dataclasses, ``hedit run``'s recipe sections extend them
(``hedit.run.recipe``), and the command line builds its options from their fields
(``hedit.cli.options``), so a default changed here changes everywhere. Every instance checks its own
values on construction: a wrong type or a value out of range is one HeditError that names the setting,
before any work (and before any journal header is written).

    SamplingConfig   collect: the paper's sampling settings
    Decoding         evaluation replies (sweep, tune, capability): greedy unless ``sample``
    ProbeConfig      the sparse probe and its C grid
    IdentifyConfig   collect + filter + features + probe
    SweepConfig      alphas x neuron sets x suites, with random controls
    Bounds           the capability bounds ``tune`` keeps to
    TuneConfig       the tuning sweep and its bounds
    VerifyConfig     checking an artifact against the runtime intervention
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any

from hedit.errors import HeditError

ANSWER_ONLY = "Respond with the answer only, without any explanation."
MODES = ("3-vs-1", "1-vs-1")  # probe labels: the paper's (answer + other rows) or answer rows only
CONTROLS = ("none", "length")  # what the probe holds fixed beside the neurons (unpenalized covariates)
SELECTS = ("fit", "stable")  # which neurons the neurons file holds: the single fit's, or the stable set
SUITES = ("false-premise", "misleading-context", "sycophancy", "jailbreak")
RUNTIMES = ("transformers", "vllm", "mlx", "structure")
REGIONS = ("answer", "output", "other")
ENGINES = ("auto", "hf", "vllm")
DTYPES = ("float32", "bfloat16", "float16")
# Upper bounds where a larger value can only be a mistake (1e9 samples, a billion-row batch): one line
# naming the setting, before any work, instead of an out-of-memory kill.
MAX_SAMPLES = 1000
MAX_TOKENS = 32768
MAX_BATCH = 65536
MAX_TOP_K = 1_000_000
MAX_SEED = 2**32 - 1


def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    factory: Any = MISSING,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    choices: tuple | None = None,
    each: tuple | None = None,
    flag: str | None = None,
    flag_help: str | None = None,
    cli: bool = True,
) -> Any:
    """A dataclass field with what the command line and the checks need: ``help``; bounds (``min``,
    ``max`` inclusive, ``above`` exclusive) and ``choices`` for a value or, for a tuple, ``each`` item's
    choices; ``flag`` names the command-line option when it is not ``--field-name`` (for a boolean
    that defaults to true, the ``--no-...`` flag that turns it off, described by ``flag_help``);
    ``cli=False`` keeps it off the command line."""
    meta = {
        "help": help,
        "min": min,
        "max": max,
        "above": above,
        "choices": choices,
        "each": each,
        "flag": flag,
        "flag_help": flag_help,
        "cli": cli,
    }
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class Settings:
    """Base of every settings dataclass: type and range checks on construction."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(getattr(self, f.name), hints[f.name], self._where(f.name))
            _bounds(value, f.metadata, self._where(f.name))
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Checks that involve several settings (overridden where needed)."""

    @classmethod
    def _where(cls, name: str) -> str:
        return name

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default value."""
        out = {}
        for f in dataclasses.fields(cls):
            out[f.name] = f.default_factory() if f.default_factory is not MISSING else f.default
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> Settings:
        """An instance from a mapping (a recipe section): unknown keys and bad values are HeditErrors."""
        if not isinstance(data, dict):
            raise HeditError(f"{where or 'the settings'} must be a mapping of keys to values")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise HeditError(
                    f"unknown key {f'{where}.{key}' if where else key!r} (known here: {', '.join(sorted(known))})"
                )
        try:
            return cls(**data)
        except HeditError as e:
            raise HeditError(f"{where}.{e}" if where and not str(e).startswith(where) else str(e)) from None

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Settings):
        return value.to_dict()
    return value


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """``value`` as ``kind`` (int -> float, list -> tuple), or a HeditError naming ``where``."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None and type(None) in typing.get_args(kind):
            return None
        kind, origin = args[0], typing.get_origin(args[0])
    if origin is tuple:
        item = typing.get_args(kind)[0]
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
        raise HeditError(f"{where} must be a list, got {value!r}")
    if isinstance(kind, type) and issubclass(kind, Settings):
        return value if isinstance(value, kind) else kind.from_dict(value, where)
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise HeditError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if kind in (int, str, bool) and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    name = {float: "a number", int: "an integer", str: "a string", bool: "true or false"}.get(kind, str(kind))
    raise HeditError(f"{where} must be {name}, got {value!r}")


def _bounds(value: Any, meta: Any, where: str) -> None:
    if value is None:
        return
    if isinstance(value, tuple):
        each = meta.get("each")
        for i, v in enumerate(value):
            if each and v not in each:
                raise HeditError(f"{where}: unknown value {v!r}; choose from {', '.join(map(str, each))}")
            _bounds(v, {k: meta.get(k) for k in ("min", "max", "above")}, f"{where}[{i}]")
        return
    if meta.get("choices") and value not in meta["choices"]:
        raise HeditError(f"{where} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if meta.get("min") is not None and value < meta["min"]:
        raise HeditError(f"{where} must be at least {meta['min']:g}, got {_exact(value)}")
    if meta.get("max") is not None and value > meta["max"]:
        raise HeditError(f"{where} must be at most {meta['max']:g}, got {_exact(value)}")
    if meta.get("above") is not None and not value > meta["above"]:
        raise HeditError(f"{where} must be greater than {meta['above']:g}, got {_exact(value)}")


def _exact(value: float) -> str:
    """A value as short as it reads back exactly, never rounded onto the bound it broke (100.0000001 is
    not "100"); a huge integer short."""
    short = f"{value:g}"
    if float(short) == value:
        return short
    text = repr(value)
    return text if len(text) <= 40 else f"{value:.6g}"


def _nonempty(value: tuple, where: str) -> None:
    if not value:
        raise HeditError(f"{where} is empty")
    if len(set(value)) != len(value):
        raise HeditError(f"{where} lists a value twice: {', '.join(map(str, value))}")


# ------------------------------------------------------------------------------------------ collect


BATCH = 8  # questions (collect) or sequences (features, probes, a trivia check) per batch
QA_BATCH = 16  # prompts per generate call of a capability check inside another stage


@dataclass(frozen=True)
class SamplingConfig(Settings):
    """How ``collect`` samples answers: the paper's settings."""

    samples: int = setting(10, "Answers sampled per question.", min=1, max=MAX_SAMPLES)
    temperature: float = setting(1.0, "Sampling temperature.", above=0)
    top_p: float = setting(
        0.9, "Nucleus sampling: keep the smallest set of tokens with this much probability.", above=0, max=1
    )
    top_k: int = setting(50, "Keep only the k most likely tokens (0: no limit).", min=0, max=MAX_TOP_K)
    max_new_tokens: int = setting(50, "Longest answer, in tokens.", min=1, max=MAX_TOKENS)
    suffix: str = setting(ANSWER_ONLY, "Appended to each question.")
    chat_template: bool = setting(
        True,
        "Prompt through the model's chat template.",
        flag="--no-chat-template",
        flag_help="Plain 'Question: ... Answer:' prompts (base models).",
    )
    seed: int = setting(0, "Random seed.", min=0, max=MAX_SEED)

    @property
    def sampling(self) -> SamplingConfig:
        """Only the sampling settings (what a responses file records)."""
        return SamplingConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SamplingConfig)})


@dataclass(frozen=True)
class CollectConfig(SamplingConfig):
    """``hedit collect``: the sampling settings, and how many questions go in one batch (not recorded in
    the responses file: batching does not change the answers hedit's sampler draws per question batch)."""

    batch_size: int = setting(BATCH, "Questions per batch.", min=1, max=MAX_BATCH)


# ------------------------------------------------------------------------------------------ engines


@dataclass(frozen=True)
class EngineConfig(Settings):
    """Where generation runs (collect's sampling, the sweep's replies)."""

    engine: str = setting(
        "auto",
        "Generation engine: hf (transformers), vllm (in its own environment), or auto: "
        "what benchmarks/bench_generate.py measured faster for the job on this device.",
        choices=ENGINES,
    )
    engine_dtype: str = setting(
        "auto",
        "vLLM's dtype (auto: bfloat16 for sampling on CPU, float32 for sweeps, the model's own on GPU).",
        choices=("auto", *DTYPES),
    )
    tensor_parallel_size: int = setting(1, "vLLM: GPUs that share each layer (tensor parallel).", min=1)
    pipeline_parallel_size: int = setting(1, "vLLM: pipeline stages (GPUs, or nodes with the ray backend).", min=1)
    distributed_executor_backend: str | None = setting(
        None, "vLLM's executor beyond one process: mp, or ray for several nodes.", choices=("mp", "ray")
    )
    vllm_python: str | None = setting(
        None, "Python of the vLLM environment (default: $HEDIT_VLLM_PYTHON, then ./.venv-vllm/bin/python)."
    )


# ------------------------------------------------------------------------------------------ evaluation


@dataclass(frozen=True)
class Decoding(Settings):
    """How evaluation replies are generated: greedy unless ``sample``."""

    max_new_tokens: int = setting(48, "Longest reply, in tokens.", min=1, max=MAX_TOKENS)
    sample: bool = setting(False, "Sample (temperature, top-p, top-k) instead of greedy decoding.")
    temperature: float = setting(1.0, "Sampling temperature (with --sample).", above=0)
    top_p: float = setting(0.9, "Nucleus sampling (with --sample).", above=0, max=1)
    top_k: int = setting(50, "Top-k sampling (with --sample; 0: no limit).", min=0, max=MAX_TOP_K)
    seed: int = setting(0, "Random seed.", min=0, max=MAX_SEED)
    chat_template: bool = setting(
        True,
        "Prompt through the model's chat template.",
        flag="--no-chat-template",
        flag_help="Plain 'Question: ... Answer:' prompts (base models).",
    )

    @property
    def decoding(self) -> Decoding:
        """Only the decoding settings (what a sweep journal records)."""
        return Decoding(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Decoding)})


DEFAULT_ALPHAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
TUNE_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Evaluation(Decoding):
    """What ``sweep`` and ``tune`` share: the suites, how many items, the batch size."""

    suites: tuple[str, ...] = setting(
        SUITES, "Behaviour suites (comma-separated); empty: capability only.", each=SUITES
    )
    limit: int | None = setting(None, "Only the first N items of each suite (and of the trivia check).", min=1)
    batch_size: int = setting(
        128,
        "Sequences decoded together: items x (neuron set, alpha) cells in greedy sweeps on transformers, "
        "else prompts per generate call.",
        min=1,
        max=MAX_BATCH,
    )
    lm_eval: tuple[str, ...] = setting(
        (),
        "lm-evaluation-harness tasks scored on the model under every (neuron set, alpha) cell "
        "(comma-separated task names; needs lm-eval).",
    )
    lm_eval_limit: int | None = setting(None, "Only the first N documents of each lm-eval task.", min=1)
    lm_eval_include: str | None = setting(
        None, "A folder of lm-eval task YAML files: local tasks (real task data needs the Hub)."
    )

    def check(self) -> None:
        if len(set(self.suites)) != len(self.suites):
            raise HeditError(f"suites lists a suite twice: {', '.join(self.suites)}")
        if len(set(self.lm_eval)) != len(self.lm_eval):
            raise HeditError(f"lm_eval lists a task twice: {', '.join(self.lm_eval)}")
        if any(not t.strip() for t in self.lm_eval):
            raise HeditError("lm_eval names an empty task (an empty --lm-eval, or ',,' in the list)")


@dataclass(frozen=True)
class SweepConfig(Evaluation):
    """The alpha sweep: every alpha for the H-neurons and ``controls`` random sets."""

    alphas: tuple[float, ...] = setting(DEFAULT_ALPHAS, "Alphas to sweep (comma-separated).")
    controls: int = setting(3, "Random neuron sets with the H-neurons' per-layer counts.", min=0, max=100)
    capability: bool = setting(
        True, "Measure trivia accuracy and KL too.", flag="--no-capability", flag_help="Skip trivia accuracy and KL."
    )
    bootstrap: int = setting(1000, "Bootstrap resamples for intervals.", min=100, max=100_000, cli=False)

    def check(self) -> None:
        super().check()
        _nonempty(self.alphas, "alphas")
        object.__setattr__(self, "alphas", tuple(sorted(self.alphas)))
        if not self.suites and not self.capability:
            raise HeditError("nothing to measure: no suites and no capability")


@dataclass(frozen=True)
class Bounds(Settings):
    """The capability cost ``tune`` accepts."""

    max_accuracy_drop: float = setting(2.0, "Largest allowed drop of held-out trivia accuracy, in points.", min=0)
    max_kl: float = setting(0.1, "Largest allowed mean KL against alpha 1 on neutral text (nats).", min=0)
    max_over_refusal: float = setting(
        5.0,
        "Largest allowed rise of the refusal rate on harmless requests, in "
        "points (measured beside the jailbreak suite).",
        min=0,
    )
    max_drop: tuple[str, ...] = setting(
        (), "Largest allowed drop of an lm-eval task's score, in points: TASK=POINTS (comma-separated)."
    )

    def check(self) -> None:
        super().check()
        self.drops()

    def drops(self) -> dict[str, float]:
        """``max_drop`` as {task: points}."""
        out = {}
        for item in self.max_drop:
            name, sep, points = item.partition("=")
            try:
                value = float(points)
            except ValueError:
                value = float("nan")
            if not sep or not name or not value >= 0 or value == float("inf"):
                raise HeditError(f"max_drop takes TASK=POINTS with POINTS >= 0, got {item!r}")
            if name in out:
                raise HeditError(f"max_drop gives task {name!r} twice ({out[name]:g} and {value:g} points)")
            out[name] = value
        return out

    @property
    def bounds(self) -> Bounds:
        return Bounds(self.max_accuracy_drop, self.max_kl, self.max_over_refusal, self.max_drop)


METHODS = ("sweep", "fit")
CANDIDATES = ("probe", "stable", "attribution", "probe+attribution")


@dataclass(frozen=True)
class FitSettings(Settings):
    """``tune --method fit``: one alpha per neuron, learned by gradient descent under the KL budget."""

    method: str = setting(
        "sweep",
        "sweep: one alpha for every H-neuron, chosen from a sweep (the paper's edit); fit: one alpha per "
        "neuron, learned by gradient descent on the suites' faithful-vs-compliant pairs under the KL budget.",
        choices=METHODS,
    )
    candidates: str = setting(
        "probe+attribution",
        "fit: the neurons it may move: the H-neurons (probe), the stable ones, the top --k by attribution "
        "over every MLP neuron, or the H-neurons plus --k attribution neurons.",
        choices=CANDIDATES,
    )
    k: int | None = setting(None, "fit: attribution neurons to take (default: as many as the H-neurons).", min=1)
    holdout: float = setting(
        0.5, "fit: share of each suite's items held out of the fit; every reported effect is on them.", above=0, max=0.9
    )
    steps: int = setting(40, "fit: gradient steps per penalty round.", min=1, max=10_000)
    lr: float = setting(0.05, "fit: Adam's learning rate on the scales.", above=0, max=10)
    controls: int = setting(
        3, "fit: random neuron sets (the candidates' per-site counts) fitted the same way.", min=0, max=20
    )
    max_fit_neurons: int = setting(
        100_000, "fit: the most neurons one fit moves (attribution over a wide model needs --k).", min=1, cli=False
    )


@dataclass(frozen=True)
class TuneConfig(Evaluation, Bounds, FitSettings):
    """The tuning sweep (no controls, capability always) and its bounds."""

    alphas: tuple[float, ...] = setting(TUNE_ALPHAS, "Candidate alphas (comma-separated; 1 is added).")

    def check(self) -> None:
        super().check()
        drops = self.drops()  # Bounds' own check (Evaluation's does not chain to it)
        unrun = sorted(set(drops) - set(self.lm_eval))
        if unrun:
            raise HeditError(
                f"max_drop bounds lm-eval task {', '.join(map(repr, unrun))}, which this tune does not run "
                f"(lm_eval: {', '.join(self.lm_eval) or 'none'})"
            )
        _nonempty(self.alphas, "alphas")
        object.__setattr__(self, "alphas", tuple(sorted(self.alphas)))

    def sweep(self) -> SweepConfig:
        """The sweep that tune runs: its alphas plus 1, no controls, capability on."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(Evaluation)}
        alphas = tuple(sorted(set(self.alphas) | {1.0}))
        return SweepConfig(**shared, alphas=alphas, controls=0, capability=True)


# ------------------------------------------------------------------------------------------ find

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


@dataclass(frozen=True)
class ProbeConfig(Settings):
    """The sparse L1 probe: labels, the C grid and the random-neuron baseline."""

    mode: str = setting(
        "3-vs-1", "Labels: the paper's 3-vs-1 (answer and other rows) or 1-vs-1 (answer rows).", choices=MODES
    )
    c_grid: tuple[float, ...] = setting(C_GRID, "C values to try (comma-separated).", above=0, flag="--c")
    grow_c: int = setting(
        3, "When the best C is on an edge of the grid, try up to this many more C values past it.", min=0
    )
    c_bounds: tuple[float, ...] = setting((1e-4, 1e3), "The C grid never grows past these.", above=0, cli=False)
    random_draws: int = setting(5, "Random neuron sets for the baseline.", min=1, max=1000)
    control: str = setting(
        "none",
        "length: the answer span's and the response's (log) token counts enter the probe as unpenalized "
        "covariates, so L1 keeps only neurons that add to length.",
        choices=CONTROLS,
    )
    stability: int = setting(
        20,
        "Stability selection: refits at the chosen C, each on half the training questions (0: none).",
        min=0,
        max=1000,
    )
    stability_threshold: float = setting(
        0.6, "A neuron is stable when at least this share of the refits give it a positive weight.", above=0, max=1
    )
    select: str = setting(
        "fit", "Which neurons the neurons file holds: the single fit's, or the stable set.", choices=SELECTS
    )
    max_qa_drop: float = setting(
        2.0, "Pass over a C whose silenced neurons cost more QA accuracy than this (points; with the QA check).", min=0
    )
    seed: int = setting(0, "Random seed.", min=0, max=MAX_SEED)

    def check(self) -> None:
        _nonempty(self.c_grid, "c_grid")
        if len(self.c_bounds) != 2 or self.c_bounds[0] >= self.c_bounds[1]:
            raise HeditError(f"c_bounds must be two numbers, low < high, got {list(self.c_bounds)}")
        if self.select == "stable" and not self.stability:
            raise HeditError("select 'stable' needs stability selection (stability above 0)")

    @property
    def probe(self) -> ProbeConfig:
        return ProbeConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ProbeConfig)})


@dataclass(frozen=True)
class IdentifyConfig(ProbeConfig, SamplingConfig):
    """collect, filter, features and probe in one run."""

    batch_size: int = setting(BATCH, "Questions (collect) or sequences (features) per batch.", min=1, max=MAX_BATCH)
    qa_check: bool = setting(False, "Choose C also by held-out QA accuracy with the neurons silenced.")
    balance: bool = setting(
        True,
        "Draw as many correct as hallucinated questions (the paper's filter).",
        flag="--no-balance",
        flag_help="Keep every consistently answered question (the probe weighs its classes anyway).",
    )


@dataclass(frozen=True)
class FeaturesConfig(Settings):
    """CETT features of responses."""

    regions: tuple[str, ...] = setting(
        ("answer", "other"), "Token regions (comma-separated): answer, output, other.", each=REGIONS
    )
    samples_per_question: int = setting(1, "Responses per question to measure.", min=1, max=MAX_SAMPLES)
    batch_size: int = setting(BATCH, "Sequences per forward pass.", min=1, max=MAX_BATCH)
    dtype: str = setting(
        "float32", "Model compute dtype (CETT itself is always accumulated in float32).", choices=DTYPES
    )

    def check(self) -> None:
        _nonempty(self.regions, "regions")


# ------------------------------------------------------------------------------------------ check


@dataclass(frozen=True)
class VerifyConfig(Settings):
    """Checking an artifact against the runtime intervention."""

    runtime: str = setting(
        "transformers",
        "Where to check the artifact: transformers or vllm (the runtime "
        "intervention), or structure (no model: every byte against "
        "the plan, in bounded memory).",
        choices=RUNTIMES,
    )
    new_tokens: int = setting(8, "Greedy tokens generated per prompt.", min=1, max=512)
    tolerance: float | None = setting(
        None,
        "Max abs logit (transformers; default 1e-4, or 1e-5 of the largest "
        "logit if more; in bfloat16/float16 8 units in its last place) or logprob (vllm, default 1e-3) difference.",
        min=0,
        max=10,
    )
    dtype: str = setting(
        "float32",
        "transformers: compare in this dtype (bfloat16 halves the memory of float32; the default "
        "tolerance then follows its rounding).",
        choices=DTYPES,
    )
