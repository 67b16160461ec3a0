"""`hedit run RECIPE`: identify, tune, (sweep), edit, export-adapter and verify, each stage cached.

<work>/identify/        collect, filter, features, probe (each cached by `identify`)
<work>/tune/            the tuning sweep (resumable); <work>/neurons.json gets the chosen alpha
<work>/sweep/           the full sweep with random controls, when the recipe asks for it
<work>/edited/ lora/ ia3/   the artifacts; rebuilt only when neurons.json or the source changed
<work>/verify.json      verification results (cached the same way)
<work>/reproduce.json   the resolved recipe, versions, and SHA-256 of inputs and outputs
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from hedit import __version__
from hedit.choose.tune import tune
from hedit.engine.choice import choose_engine
from hedit.errors import HeditError
from hedit.find.identify import identify
from hedit.io.atomic import atomic_write_text, check_work
from hedit.io.hashing import sha256_file
from hedit.io.questions import bundled_questions, load_questions
from hedit.io.stamps import Stamps
from hedit.measure.summary import dose_lines, sweep_evidence
from hedit.measure.sweep import run_sweep
from hedit.model.load import check_device
from hedit.neurons import NeuronSet
from hedit.run.recipe import Recipe
from hedit.score.compliance import RULES


def _folder_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}


def run_recipe(recipe: Recipe, progress: bool = True, log=print, grader=None) -> dict[str, Any]:
    check_device(recipe.device)  # a recipe written for a GPU box fails here, not after the first stage
    work = Path(recipe.work)
    check_work(work, [("model", recipe.model)])
    fresh = not os.path.lexists(work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(recipe, work, progress, log, grader)
    except BaseException:
        if fresh:  # a recipe that failed before any stage wrote a thing leaves no empty work folder
            with contextlib.suppress(OSError):
                work.rmdir()
        raise


def _run(recipe: Recipe, work: Path, progress: bool, log, grader) -> dict[str, Any]:
    stamps = Stamps(work)
    out: dict[str, Any] = {"work": str(work)}

    # 1. identify ------------------------------------------------------------------------------------------
    ic = recipe.identify
    qs = bundled_questions() if ic.questions == "bundled" else load_questions(ic.questions)
    qs = qs[: ic.limit] if ic.limit else qs
    log(f"[1/5] identify {recipe.model} on {len(qs)} questions")
    shared = SharedModel(recipe.model, recipe.device)  # loaded once, by the first stage that needs it
    sweeps = choose_engine("sweep", recipe.engine, recipe.device)  # the engine of tune's and sweep's cells
    loaded = shared if sweeps.kind == "hf" else None  # vLLM loads its own model
    report = identify(
        recipe.model,
        qs,
        work / "identify",
        ic,
        progress,
        log,
        grader,
        device=recipe.device,
        engine=recipe.engine,
        loaded=shared,
    )
    source = Path(report["model_path"])
    found = work / "identify" / "neurons.json"
    out["identify"] = {k: report[k] for k in ("h_neurons", "C", "heldout", "h_neurons_only", "random_neurons_only")}
    log(f"      {report['h_neurons']} H-neurons, held-out accuracy {report['heldout']['accuracy']:.3f}")

    # 2. tune ----------------------------------------------------------------------------------------------
    neurons = work / "neurons.json"
    tc = recipe.tune
    if tc.enabled and tc.method == "fit":
        from hedit.choose.tune_fit import tune_fit

        log(f"[2/5] tune: fit one alpha per neuron ({tc.candidates}) on {', '.join(tc.suites)}")
        shutil.copyfile(found, neurons)
        report = tune_fit(
            recipe.model, neurons, work / "tune", tc, judge=grader, progress=progress, log=lambda m: log(f"      {m}"),
            loaded=loaded, device=recipe.device,
        )  # fmt: skip
        out["tune"] = {"method": "fit", "neurons": report["neurons"], "kl": report["budget"]["kl"],
                       "verdict": report["verdict"]}  # fmt: skip
    elif tc.enabled:
        log(f"[2/5] tune alpha over {tc.alphas} on {', '.join(tc.suites) or 'capability only'}")
        shutil.copyfile(found, neurons)
        decision = tune(
            recipe.model,
            neurons,
            work / "tune",
            tc,
            judge=grader,
            progress=progress,
            log=log,
            device=recipe.device,
            engine=recipe.engine,
            choice=sweeps,
            loaded=loaded,
        )
        for line in dose_lines(decision["summary"]):
            log(f"      {line}")
        log(f"      alpha = {decision['alpha']:g}: {decision['reason']}")
        if decision["alpha"] == 1.0:
            log(
                "      note: with alpha 1 the artifacts equal the source; to edit anyway, "
                "--set tune.enabled=false --set tune.alpha=0"
            )
        out["tune"] = {"alpha": decision["alpha"], "reason": decision["reason"]}
    else:
        ns = NeuronSet.load(found)
        ns.alpha = tc.alpha
        ns.provenance = dict(ns.provenance) | {"alpha": "set by the recipe (tune.enabled: false)"}
        ns.save(neurons)
        log(f"[2/5] tune: off, alpha {tc.alpha:g} from the recipe")
        out["tune"] = {"alpha": tc.alpha, "reason": "set by the recipe"}

    # 3. sweep (optional) ---------------------------------------------------------------------------------
    sc = recipe.sweep
    if sc.enabled:
        log(f"[3/5] sweep alphas {sc.alphas} with {sc.controls} random controls")
        summary = run_sweep(
            recipe.model,
            neurons,
            work / "sweep",
            sc,
            judge=grader or RULES,
            progress=progress,
            log=log,
            device=recipe.device,
            engine=recipe.engine,
            choice=sweeps,
            loaded=loaded,
        )
        for line in dose_lines(summary):
            log(f"      {line}")
        out["sweep"] = str(work / "sweep" / "sweep.json")
        out["sweep_capability"] = summary.get("capability")
        ns = NeuronSet.load(neurons)  # the edited models' cards carry the sweep's slopes
        ns.provenance = dict(ns.provenance) | {"sweep": sweep_evidence(summary)}
        ns.save(neurons)
    else:
        log("[3/5] sweep: off (sweep.enabled: true runs it with random controls)")

    oc = recipe.origin
    if oc.enabled:
        from hedit.find.origin import run_origin

        stamp = {"base": oc.base, "draws": oc.draws, "neurons_sha256": sha256_file(found)}
        if stamps.fresh("origin", stamp, work / "origin" / "origin.json"):
            log("      origin: cached")
        else:
            log(f"      origin: {oc.base} against {recipe.model}")
            run_origin(
                oc.base,
                recipe.model,
                found,
                work / "origin",
                work / "identify",
                oc.draws,
                device=recipe.device,
                progress=progress,
            )
            stamps.done("origin", stamp)
        out["origin"] = str(work / "origin" / "origin.json")

    # 4. edit and export ----------------------------------------------------------------------------------
    from hedit.edit.adapters import export_adapter
    from hedit.edit.checkpoint import edit_checkpoint

    inputs = {"neurons_sha256": sha256_file(neurons), "source": str(source.resolve())}
    artifacts: dict[str, Path] = {}
    wanted = [("edited", recipe.export.edited), ("lora", recipe.export.lora), ("ia3", recipe.export.ia3)]
    log(f"[4/5] export {', '.join(k for k, on in wanted if on) or 'nothing'}")
    for kind, on in wanted:
        if not on:
            continue
        target = work / kind
        if stamps.fresh(f"export:{kind}", inputs, target):
            log(f"      {kind}: cached in {target}")
        else:
            if kind == "edited":
                edit_checkpoint(source, neurons, target, overwrite=True, progress=progress)
            else:
                export_adapter(source, neurons, target, kind, overwrite=True)
            stamps.done(f"export:{kind}", inputs, _folder_digest(target))
        artifacts[kind] = target
    out["artifacts"] = {k: str(v) for k, v in artifacts.items()}

    # 5. verify -------------------------------------------------------------------------------------------
    vc = recipe.verify
    results: dict[str, Any] = {}
    if vc.enabled and artifacts:
        log(f"[5/5] verify in {vc.runtime}")
        for kind, target in artifacts.items():
            vin = inputs | {
                "artifact": stamps.result(f"export:{kind}"),
                "runtime": vc.runtime,
                "new_tokens": vc.new_tokens,
                "tolerance": vc.tolerance,
                "dtype": vc.dtype,
            }
            if stamps.fresh(f"verify:{kind}", vin):
                res = stamps.result(f"verify:{kind}")
            else:
                res = _verify(source, neurons, kind, target, vc)
                stamps.done(f"verify:{kind}", vin, res)
            results[kind] = res
            word = {True: "PASS", False: "FAIL", None: f"SKIPPED ({res.get('skipped')})"}[res["passed"]]
            log(f"      {kind}: {word} in {res.get('runtime', vc.runtime)}")
    else:
        log("[5/5] verify: off")
    out["verify"] = results
    atomic_write_text(work / "verify.json", json.dumps(results, indent=2) + "\n")
    _reproduce(recipe, work, source, neurons, {k: stamps.result(f"export:{k}") for k in artifacts}, out)
    if any(r["passed"] is False for r in results.values()):
        raise HeditError(
            f"verification failed for {', '.join(k for k, r in results.items() if r['passed'] is False)}; "
            f"see {work / 'verify.json'}"
        )
    return out


class SharedModel:
    """The recipe's model and tokenizer in transformers, loaded the first time a stage asks (``loaded`` of
    identify, tune and sweep), then shared by every later stage."""

    def __init__(self, model: str, device: str):
        self.model, self.device, self._pair = model, device, None

    def __call__(self):
        if self._pair is None:
            from hedit.model.builtin import resolve_model
            from hedit.model.load import load_model, load_tokenizer

            path = resolve_model(self.model)
            tok = load_tokenizer(path)
            if tok is None:
                raise HeditError(f"{path} has no tokenizer; hedit run needs one")
            self._pair = (load_model(path, device=self.device), tok)
        return self._pair


def _verify(source: Path, neurons: Path, kind: str, target: Path, vc) -> dict[str, Any]:
    """One artifact checked as ``hedit verify`` checks it, in the recipe's runtime with its tolerance,
    dtype and tokens (``verify_artifact``: one dispatch for the command and the recipe). A check that
    cannot run there (IA3 in vLLM, which serves LoRA only) is recorded as skipped (``passed`` null), never
    as passed."""
    from hedit.check.verify import verify_artifact
    from hedit.config import VerifyConfig

    if vc.runtime == "vllm" and kind == "ia3":
        return {"passed": None, "runtime": vc.runtime, "skipped": "vLLM serves LoRA adapters, not IA3"}
    cfg = VerifyConfig(runtime=vc.runtime, new_tokens=vc.new_tokens, tolerance=vc.tolerance, dtype=vc.dtype)
    kw = {"edited": target} if kind == "edited" else {"adapter": target}
    return verify_artifact(source, neurons, cfg=cfg, **kw).to_dict() | {"runtime": vc.runtime}


def _reproduce(
    recipe: Recipe, work: Path, source: Path, neurons: Path, artifacts: dict[str, dict[str, str]], out: dict[str, Any]
) -> None:
    import platform

    import torch
    import transformers

    data = {
        "hedit_version": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "recipe": recipe.to_dict(),
        "source": {"path": str(source.resolve()), "config_sha256": sha256_file(source / "config.json")},
        "neurons_sha256": sha256_file(neurons),
        "artifacts_sha256": artifacts,
        "results": {k: v for k, v in out.items() if k != "work"},
    }
    atomic_write_text(work / "reproduce.json", json.dumps(data, indent=2) + "\n")
