"""`make demo`: find the H-neurons of the embedded SmolLM2-135M-Instruct, edit it, verify the edit.

Runs ``identify`` on the bundled trivia set (every held-out question and the first train ones), then
``edit`` (alpha 0: H-neurons silenced), ``export-adapter --format lora`` and ``verify`` for both, and
prints where every result is. So that a 135M model gives enough answers to score in a few minutes on
2 CPU cores, the demo samples 3 answers at temperature 0.7 (the paper: 10 at 1.0) and keeps every
consistently answered question (no class balancing: the probe weighs its classes, and AUROC does not
care): more than 100 held-out answers. ``hedit identify`` with no options uses the paper's settings.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hedit.check.verify import verify
from hedit.config import EngineConfig, IdentifyConfig
from hedit.edit.adapters import export_adapter
from hedit.edit.checkpoint import edit_checkpoint
from hedit.find.identify import identify
from hedit.io.questions import bundled_questions
from hedit.model.builtin import DEFAULT_MODEL

DEMO = IdentifyConfig(samples=3, temperature=0.7, max_new_tokens=24, batch_size=32, balance=False)
TRAIN_QUESTIONS = 320  # and all 189 held-out ones


def demo_questions(train: int = TRAIN_QUESTIONS) -> list:
    """Every held-out question of the bundled set, and its first ``train`` train questions."""
    qs = bundled_questions()
    return [q for q in qs if q.split == "heldout"] + [q for q in qs if q.split == "train"][:train]


def main(
    out: str = "demo-out",
    train: int = TRAIN_QUESTIONS,
    model: str = DEFAULT_MODEL,
    cfg: IdentifyConfig = DEMO,
    progress: bool = True,
) -> int:
    root = Path(out)
    t0 = time.time()
    qs = demo_questions(train)
    print(
        f"1/3 identify: {model} on {len(qs)} bundled trivia questions "
        f"({cfg.samples} samples each, temperature {cfg.temperature})",
        flush=True,
    )
    # transformers on every machine: its samples do not depend on whether a vLLM environment exists
    report = identify(model, qs, root / "identify", cfg, progress, engine=EngineConfig(engine="hf"))
    src = Path(report["model_path"])
    neurons = root / "identify" / "neurons.json"
    rnd = report["random_neurons_only"]["accuracy"]
    lo, hi = report["heldout"]["auroc_ci95"]
    print(
        f"    {report['h_neurons']} H-neurons ({report['fraction_of_neurons']:.3%} of {model}'s MLP "
        f"neurons); held-out accuracy {report['heldout']['accuracy']:.3f}, AUROC {report['heldout']['auroc']:.3f} "
        f"[{lo:.2f}, {hi:.2f}]; "
        f"H-neurons alone {report['h_neurons_only']['accuracy']:.3f} vs random neurons "
        f"{rnd['mean']:.3f} +- {rnd['std']:.3f}",
        flush=True,
    )
    rows = report["rows"]
    auroc = report["random_neurons_only"]["auroc"]
    print(
        f"    {rows['heldout_answers']} held-out answers ({rows['heldout_positive']} hallucinated); AUROC of "
        f"the H-neurons alone {report['h_neurons_only']['auroc']:.3f} vs random neurons {auroc['mean']:.3f} "
        f"+- {auroc['std']:.3f}",
        flush=True,
    )
    from hedit.find.confounds import confound_lines
    from hedit.find.stability import stability_line

    if report.get("stability"):
        print(f"    {stability_line(report['stability'])}", flush=True)
    for line in confound_lines(report.get("confounds"), report["heldout"]["auroc"], report.get("control", "none")):
        print(f"    {line}", flush=True)

    print("2/3 edit and export: alpha 0 (H-neurons silenced)", flush=True)
    edited = edit_checkpoint(src, neurons, root / "edited", alpha=0.0, overwrite=True, progress=False)
    lora = export_adapter(src, neurons, root / "lora", "lora", alpha=0.0, overwrite=True)

    print("3/3 verify against the runtime intervention (float32)", flush=True)
    ok = True
    for name, kw in (("edited", {"edited": edited}), ("lora", {"adapter": lora})):
        r = verify(src, neurons, 0.0, **kw)
        ok &= r.passed
        print(
            f"    {name:6s} {'PASS' if r.passed else 'FAIL'}: max abs logit diff {r.max_abs_logit_diff:.1e} "
            f"(edit moves logits by {r.effect:.2f}), greedy agreement {r.token_agreement:.0%}",
            flush=True,
        )

    print(f"\nDone in {(time.time() - t0) / 60:.1f} min. Results:")
    for label, path in [
        ("source model (safetensors)", src),
        ("responses", root / "identify" / "responses.jsonl"),
        ("features", root / "identify" / "features"),
        ("H-neurons", neurons),
        ("probe report", root / "identify" / "report.json"),
        ("plots", root / "identify" / "neurons_per_layer.png"),
        ("", root / "identify" / "c_sweep.png"),
        ("", root / "identify" / "confounds.png"),
        ("edited checkpoint", edited),
        ("LoRA adapter", lora),
    ]:
        print(f"  {label:27s} {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2], *(int(a) for a in sys.argv[2:3])))
