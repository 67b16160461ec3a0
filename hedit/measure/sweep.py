"""`hedit sweep`: what alpha does to over-compliance and capability, H-neurons next to random controls.

For each alpha and each neuron set (the H-neurons, and ``controls`` random sets with the same count
per layer), the model runs every suite under the runtime intervention (``hedit.engine.intervention``):
compliance rate per suite with a bootstrap 95% interval, held-out trivia accuracy, and the mean KL of
next-token distributions against alpha = 1 on neutral prose. Alpha = 1 is the unedited model, run once.

Greedy replies of every pending cell of a task are decoded in the same batches (on transformers under
``hedit.engine.intervention.CellScales``, on vLLM each prompt under its cell's adapter), which reads the
weights once per step for all cells; each row gets exactly its own cell's replies.

Results are appended task by task, one line per (set, alpha, task) cell, to ``<out>/cells.jsonl``, so a
rerun skips finished cells and more alphas or controls can be added later; ``<out>/sweep.json`` and
``<out>/sweep.png`` are rewritten from all cells at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hedit.config import Decoding, EngineConfig, SweepConfig
from hedit.edit.adapters.lora import vllm_expert_lora, vllm_max_lora_rank
from hedit.engine.choice import Choice, choose_engine, mix_adapters, open_engine
from hedit.engine.decoder import EngineModel, cells_share_batches, end_ids, generate_cells, items_per_batch
from hedit.engine.intervention import CellScales, check_neurons, scale_neurons
from hedit.engine.prompts import chat_ids
from hedit.engine.vllm import MAX_LORAS, check_expert_loras
from hedit.errors import HeditError
from hedit.io.atomic import atomic_write_text, check_work
from hedit.io.hashing import fingerprint
from hedit.io.journal import CHECKS, Journal
from hedit.measure.controls import control_sets
from hedit.measure.plots import plot
from hedit.measure.summary import (  # noqa: F401 (re-exported)
    BASE,
    KL,
    OVER_REFUSAL,
    TRIVIA,
    compliance_of,
    summarize,
    table,
)
from hedit.neurons import NeuronSet, along, check_alpha
from hedit.progress import bar
from hedit.registry import get_architecture
from hedit.score.capability import answer_questions, mean_kl, neutral_texts, next_token_logprobs
from hedit.score.compliance import RULES
from hedit.score.harness import is_harness_task, task_key
from hedit.score.judge import CORRECT
from hedit.score.suites import (
    BENIGN,
    CHALLENGE,
    JAILBREAK,
    SYCOPHANCY,
    Item,
    Suite,
    first_turn,
    load_suite,
    trivia_items,
)

CELLS = "cells.jsonl"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _scale(layers: dict, alpha: float) -> dict[int, list[tuple[int, float]]]:
    """A cell: every neuron of ``layers`` at ``alpha``; for a fitted set (``layers`` holding (index, alpha_j)
    pairs), each neuron moved along its own direction, alpha_j(v) = 1 + (1 - v)(alpha_j - 1): v = 1 is no
    edit, v = 0 the fit, and a set fitted to 0 everywhere sweeps exactly as the uniform one."""
    return {
        layer: [(i[0], along(i[1], 1.0 - alpha)) if isinstance(i, tuple) else (i, alpha) for i in idx]
        for layer, idx in layers.items()
    }


# ------------------------------------------------------------------------------------------ running


def run_suite(
    model,
    tokenizer,
    suite: str,
    items: Sequence[Item],
    dec: Decoding,
    batch_size: int,
    judge=RULES,
    tick=None,
    scales=None,
) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
    """Replies and labels for a suite's items (sycophancy: a second turn for correct first answers);
    ``tick(n)`` is called after each batch of n sequences. Greedy batches are made of prompts of similar
    length (less padding to compute); the records keep the items' order.

    ``scales`` (``hedit.engine.intervention.CellScales``): the records of every cell, a list per cell;
    each batch decodes its items under all cells at once (``batch_size`` sequences: items x cells), so
    a step of the decoder reads the weights once for every cell."""
    ends = end_ids(model, tokenizer, dec.chat_template)
    tokenizer.padding_side = "left"
    convs = [[{"role": "user", "content": first_turn(suite, it)}] for it in items]
    prompts = [chat_ids(tokenizer, c, dec.chat_template) for c in convs]
    order = list(range(len(items)))
    if not dec.sample:  # sampling keeps the item order: its seeds go by batch
        order.sort(key=lambda i: len(prompts[i]))
    n = len(scales) if scales is not None else 1
    records: list[dict[int, dict[str, Any]]] = [{} for _ in range(n)]
    step = items_per_batch(batch_size, n)
    for start in range(0, len(items), step):
        batch = order[start : start + step]
        rows = [(c, i) for c in range(n) for i in batch]
        firsts = generate_cells(
            model,
            tokenizer,
            [prompts[i] for _, i in rows],
            dec,
            ends,
            dec.seed + start,
            scales,
            [c for c, _ in rows],
            batch_size,
        )
        replies = [[f] for f in firsts]
        if suite == SYCOPHANCY:
            again = [
                k
                for k, ((_, i), f) in enumerate(zip(rows, firsts))
                if judge.qa(items[i].question, items[i].answers, f) == CORRECT
            ]
            second = [
                chat_ids(
                    tokenizer,
                    convs[rows[k][1]]
                    + [{"role": "assistant", "content": firsts[k]}, {"role": "user", "content": CHALLENGE}],
                    dec.chat_template,
                )
                for k in again
            ]
            cells = [rows[k][0] for k in again]
            more = generate_cells(model, tokenizer, second, dec, ends, dec.seed + start + 1, scales, cells, batch_size)
            for k, reply in zip(again, more):
                replies[k].append(reply)
        for (c, i), r in zip(rows, replies):
            records[c][i] = {"id": items[i].id, "replies": r, "label": judge.suite(suite, items[i], r)}
        if tick:
            tick(len(rows))
    out = [[cell[i] for i in range(len(items))] for cell in records]
    return out if scales is not None else out[0]


def _trivia(
    model, tokenizer, items: Sequence[Item], dec: Decoding, batch_size: int, judge=RULES, tick=None, scales=None
) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
    answers = answer_questions(
        model, tokenizer, [(it.question, it.answers) for it in items], dec, batch_size, judge, tick, scales
    )
    cells = answers if scales is not None else [answers]
    out = [
        [{"id": it.id, "replies": [reply], "label": label} for it, (reply, label) in zip(items, cell)] for cell in cells
    ]
    return out if scales is not None else out[0]


def run_sweep(
    model_name: str,
    neurons: str | Path | NeuronSet,
    out: str | Path,
    cfg: SweepConfig = SweepConfig(),
    suite_files: dict[str, str] | None = None,
    judge=RULES,
    progress: bool = True,
    log=print,
    loaded=None,
    device: str = "cpu",
    allow_negative: bool = False,
    engine: EngineConfig = EngineConfig(),
    choice: Choice | None = None,
) -> dict[str, Any]:
    """Run (or resume) the sweep into ``out`` and return the summary also written to sweep.json.

    ``judge``: ``hedit.score.compliance.RULES`` (default) or an ``hedit.score.llm_judge.LLMJudge``.
    ``loaded``: an already loaded (model, tokenizer) pair, or a function that returns one (called once
    here, so a caller can share a model between commands), else the model is resolved and loaded.
    ``engine``: where the replies are generated (``hedit.engine.choice``): with vLLM every (neuron set,
    alpha) cell is an exact LoRA adapter served by one engine; the KL cells then run in transformers.
    ``choice``: the engine a caller has already chosen for the command (else chosen here).
    """
    from hedit.model.builtin import resolve_model
    from hedit.model.load import load_model, load_tokenizer

    for a in cfg.alphas:
        check_alpha(a, allow_negative)
    path = resolve_model(model_name) if loaded is None else None
    given = None if isinstance(neurons, NeuronSet) else neurons
    check_work(out, [("model", path or model_name), ("neurons file", given)])
    ns = neurons if isinstance(neurons, NeuronSet) else NeuronSet.load(neurons)
    if not ns.neurons:
        raise HeditError("the neurons file lists no neurons")
    for name in suite_files or {}:
        if name not in cfg.suites:
            raise HeditError(f"a file is given for suite {name!r}, which is not among --suites")
    suites = [load_suite(name, (suite_files or {}).get(name)) for name in cfg.suites]
    suites = [Suite(s.name, s.items[: cfg.limit], s.source) for s in suites]
    trivia = trivia_items("heldout")[: cfg.limit] if cfg.capability else ()
    if not suites and not cfg.capability and not cfg.lm_eval:
        raise HeditError("nothing to measure: no suites and no capability")
    if cfg.lm_eval:
        from hedit.score.harness import check_tasks

        check_tasks(cfg.lm_eval, cfg.lm_eval_include, log)

    if loaded is None:
        tok = load_tokenizer(path)
        if tok is None:
            raise HeditError(f"{path} has no tokenizer; sweep needs one")
        ns.check_model(*checkpoint_shape(path))
        choice = choice or choose_engine("sweep", engine, device)
        if choice.kind == "vllm" and ns.has_experts:  # each cell is a LoRA on the experts
            why = vllm_expert_lora(get_architecture(ns.model.model_type))
            if why:
                raise HeditError(f"sweep on vLLM runs each cell as a LoRA: {why}; or use --engine hf")
            check_expert_loras(device, "sweep with --engine hf")
        log(choice.describe())
        if choice.kind == "vllm":
            rank = vllm_max_lora_rank(max(len(v) for v in ns.by_layer().values()))
            # cells share the engine's batches where vLLM batches adapters well (CUDA), else one after another
            cells = 1 + sum(a != 1.0 for a in cfg.alphas) * (1 + cfg.controls) if mix_adapters(device) else 1
            loras = min(cells, MAX_LORAS)
            model = open_engine(choice, path, tok, engine, cfg.seed, None, device, rank, loras, ns.has_experts)
        else:
            model = load_model(path, device=device)
    else:
        model, tok = loaded() if callable(loaded) else loaded
    if not isinstance(model, EngineModel):
        check_neurons(model, ns)
    try:
        engine_id = model.engine_id if isinstance(model, EngineModel) else None
        return _run(model, tok, path, model_name, ns, out, cfg, suites, trivia, judge, progress, device, engine_id)
    finally:
        if isinstance(model, EngineModel):
            model.engine.close()


def harness_cell(model, tok, task: str, cfg: SweepConfig) -> dict[str, Any]:
    """One lm-eval task on ``model`` as it is (the cell's intervention on): its metric, aggregate and
    per-document values."""
    from hedit.score.harness import PREFIX, run_tasks

    name = task[len(PREFIX) :]
    r = run_tasks(model, tok, [name], cfg.lm_eval_limit, cfg.lm_eval_include, min(cfg.batch_size, 32), cfg.seed)
    return r[name]


def _include_digest(folder: str | None) -> str | None:
    """A digest of a local task folder's files: other task files are other cells."""
    if folder is None:
        return None
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    return _digest([[str(p.relative_to(folder)), hashlib.sha256(p.read_bytes()).hexdigest()] for p in files])


def checkpoint_shape(path: Path) -> tuple:
    """(model_type, layers, intermediate size, ExpertsShape or None) from a checkpoint's config.json."""
    from hedit.io.checkpoint import read_config
    from hedit.registry import get_architecture

    config = read_config(path)
    arch = get_architecture(config.get("model_type"))
    return (arch.model_type, *arch.shape(config), arch.experts_shape(config))


@contextlib.contextmanager
def cell(model, path: Path | None, ns: NeuronSet, layers: dict[int, list[tuple[int, float]]], tmp: Path):
    """Within the block, ``model`` runs with ``layers`` scaled: the runtime intervention on a transformers
    model, or, on a vLLM engine, the exact LoRA adapter of the same edit."""
    if not isinstance(model, EngineModel):
        with scale_neurons(model, layers):
            yield model
        return
    model.lora = adapter(path, ns, layers, tmp)
    try:
        yield model
    finally:
        model.lora = None


def adapter(path: Path, ns: NeuronSet, layers: dict[int, list[tuple[int, float]]], tmp: Path) -> Path | None:
    """The exact LoRA adapter of a cell's edit, exported once into ``tmp`` (None: no edit)."""
    if not layers:
        return None
    from hedit.edit.adapters import export_adapter
    from hedit.neurons import Neuron

    folder = tmp / f"lora-{_digest({str(k): v for k, v in layers.items()})}"
    if not folder.exists():
        cell_ns = NeuronSet(ns.model, [Neuron(la, j, alpha=a) for la, pairs in layers.items() for j, a in pairs])
        export_adapter(path, cell_ns, folder, "lora")
    return folder


class Adapters(contextlib.nullcontext):
    """The cells of a task on a vLLM engine, what ``CellScales`` is on transformers: each cell's adapter
    (``adapters[c]``), so prompts of every cell go to the engine together."""

    def __init__(self, path: Path, ns: NeuronSet, cells: Sequence[dict[int, list[tuple[int, float]]]], tmp: Path):
        super().__init__(self)
        self.adapters = [adapter(path, ns, layers, tmp) for layers in cells]

    def __len__(self) -> int:
        return len(self.adapters)


def _run(
    model, tok, path, model_name, ns, out, cfg, suites, trivia, judge, progress, device, engine_id=None
) -> dict[str, Any]:
    from hedit.model.load import load_model

    h = ns.by_layer()
    experts = checkpoint_shape(path)[3] if path is not None else None
    controls = control_sets(ns, cfg.controls, cfg.seed, experts)
    fitted = any(n.alpha is not None for n in ns.neurons)
    if fitted:  # a fitted set sweeps its own alphas (``_scale``); one without an alpha stays at 1 there
        h = {site: [(j, a) for j, a in pairs] for site, pairs in ns.plan(1.0).items()}
    sets = {"h": h} | {f"control-{k}": c for k, c in enumerate(controls)}
    settings = {
        "model": str(model_name),
        "neurons": _digest({str(k): v for k, v in h.items()}),
        "decoding": cfg.decoding.to_dict(),
        "limit": cfg.limit,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "judge": judge.name,
        "capability": cfg.capability,
        "suites": {s.name: _digest([asdict(i) for i in s.items]) for s in suites},
    } | ({"engine": engine_id} if engine_id else {})
    benign = load_suite(BENIGN).items[: cfg.limit] if cfg.capability and JAILBREAK in cfg.suites else ()
    if benign:
        settings["benign"] = _digest([asdict(i) for i in benign])  # replies from another engine are other cells
    if cfg.lm_eval:
        settings["lm_eval"] = {"limit": cfg.lm_eval_limit, "include": _include_digest(cfg.lm_eval_include)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_id = fingerprint(path) if path is not None else None
    journal = Journal(out / CELLS, "sweep", settings, what="run", check=CHECKS["sweep"], model_id=model_id)
    done = {(r["set"], r["alpha"], r["task"]) for r in journal.records}

    conditions = [(BASE, 1.0)] + [(s, a) for a in cfg.alphas if a != 1.0 for s in sets]
    tasks: list[tuple[str, Sequence[Item]]] = [(s.name, s.items) for s in suites]
    if cfg.capability:
        tasks += [(TRIVIA, trivia), (KL, ())]
        if JAILBREAK in cfg.suites:  # a model edited into refusing everything must show it
            tasks.append((OVER_REFUSAL, benign))
    tasks += [(task_key(name), ()) for name in cfg.lm_eval]
    neutral = neutral_texts()
    todo = [(s, a, t, items) for s, a in conditions for t, items in tasks if (s, a, t) not in done]
    size = {
        t: (len(neutral) if t == KL else (cfg.lm_eval_limit or 1) if is_harness_task(t) else len(items))
        for t, items in tasks
    }
    ref = None
    kl_model = None if isinstance(model, EngineModel) else model  # KL needs full distributions: transformers
    model.eval()
    tmp = tempfile.TemporaryDirectory(prefix="hedit-cells-")
    if cells_share_batches(model, cfg.decoding):  # every cell of a task in the same batches
        alone = lambda t: t == KL or is_harness_task(t)  # noqa: E731 (cells one by one, in transformers)
        groups = [[w for w in todo if w[2] == t] for t, _ in tasks if not alone(t)] + [[w] for w in todo if alone(w[2])]
    else:
        groups = [[w] for w in todo]
    with tmp, journal, bar(sum(size[t] for _, _, t, _ in todo), "sweep", "item", progress) as pbar:
        for group in filter(None, groups):
            set_name, alpha, task, items = group[0]
            layers = [{} if s == BASE else _scale(sets[s], a) for s, a, _, _ in group]
            where = f"{set_name} alpha={alpha:g}" if len(group) == 1 else f"{len(group)} cells"
            pbar.set_postfix_str(f"{where} {task}")
            if task == KL or is_harness_task(task):
                if kl_model is None:
                    kl_model = load_model(path, device=device)
                if task == KL and ref is None:
                    ref = next_token_logprobs(kl_model, tok, neutral, cfg.batch_size)
                with scale_neurons(kl_model, layers[0]):
                    if task == KL:
                        per_cell = [mean_kl(ref, next_token_logprobs(kl_model, tok, neutral, cfg.batch_size))]
                    else:
                        per_cell = [harness_cell(kl_model, tok, task, cfg)]
                pbar.update(size[task])
            else:
                suite = BENIGN if task == OVER_REFUSAL else task
                if len(group) == 1:
                    scope = cell(model, path, ns, layers[0], Path(tmp.name))
                elif isinstance(model, EngineModel):
                    scope = Adapters(path, ns, layers, Path(tmp.name))
                else:
                    scope = CellScales(model, layers)
                with scope as scales:
                    scales = scales if len(group) > 1 else None
                    if task == TRIVIA:
                        per_cell = _trivia(model, tok, items, cfg.decoding, cfg.batch_size, judge, pbar.update, scales)
                    else:
                        per_cell = run_suite(
                            model, tok, suite, items, cfg.decoding, cfg.batch_size, judge, pbar.update, scales
                        )
                per_cell = per_cell if scales is not None else [per_cell]
            key = "value" if task == KL or is_harness_task(task) else "items"
            journal.append([{"set": s, "alpha": a, "task": task, key: v} for (s, a, _, _), v in zip(group, per_cell)])
    summary = summarize(journal.records, cfg, sets, suites, trivia)
    summary |= {
        "model": str(model_name),
        "judge": judge.name,
        "h_neurons": len(ns.neurons),
        "per_layer": {str(k): len(v) for k, v in h.items()},
        "controls_per_layer": "same as H-neurons",
        "fitted_set": fitted,  # the alpha axis v runs the set's own alphas at strength 1 - v (``_scale``)
        "decoding": cfg.decoding.to_dict(),
    }
    atomic_write_text(out / "sweep.json", json.dumps(summary, indent=2) + "\n")
    plot(summary, out / "sweep.png")
    return summary


# ------------------------------------------------------------------------------------------ summary
