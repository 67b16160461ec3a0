"""The `hedit` command line: a thin layer over the Python API."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
import threading

import click

from . import __version__
from .errors import HeditError, Interrupted
from .neurons import check_alpha


class _Group(click.Group):
    """Prints a HeditError as one line on stderr and exits 1, with no traceback."""

    ORDER = ("identify", "collect", "filter", "features", "probe", "sweep", "tune", "edit", "export-adapter",
             "verify", "push", "run", "architectures")

    def list_commands(self, ctx):
        """Commands in pipeline order, not alphabetical."""
        return sorted(self.commands, key=lambda c: (self.ORDER.index(c) if c in self.ORDER else len(self.ORDER), c))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Usage errors too are one ``hedit: error:`` line (exit 2), not click's usage block."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            hint = f" (`{e.ctx.command_path} --help` lists the options)" if e.ctx is not None else ""
            _fail(e.format_message() + hint, e.exit_code)
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):
        with _signals_as_exceptions():
            try:
                return super().invoke(ctx)
            except HeditError as e:
                _fail(str(e), 1)
            except OSError as e:
                _fail(_os_error(e), 1)
            except KeyboardInterrupt:
                _fail("interrupted (SIGINT); no output was left half-written", 130)
            except Interrupted as e:
                _fail(f"interrupted ({e}); no output was left half-written", 128 + e.signum)
            except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
                raise
            except Exception as e:  # a bug: still one line, the traceback on request
                if os.environ.get("HEDIT_DEBUG"):
                    raise
                _fail(f"internal error ({type(e).__name__}: {_first_line(e)}); rerun with HEDIT_DEBUG=1 for the "
                      "traceback and report it", 2)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


def _os_error(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return f"no space left on the device{f' writing {e.filename}' if e.filename else ''}; nothing was left " \
               "half-written"
    where = f": {e.filename}" if e.filename else ""
    return f"{e.strerror or _first_line(e)}{where}"


def _fail(message: str, code: int) -> None:
    click.echo(f"hedit: error: {' '.join(message.split())}", err=True)
    sys.exit(code)


@contextlib.contextmanager
def _signals_as_exceptions():
    """SIGTERM and SIGHUP raise ``Interrupted`` in the main thread (SIGINT already raises
    KeyboardInterrupt), so temporary outputs are removed before hedit exits."""
    def handler(signum, frame):
        raise Interrupted(signum)

    old = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _alpha(ctx, param, value):
    if value is not None:
        check_alpha(value, allow_negative=True)  # the sign is checked with --allow-negative-alpha later
    return value


def _device(ctx, param, value):
    from .models import check_device

    return check_device(value)


SOURCE = click.argument("source", type=click.Path(path_type=str))
NEURONS = click.option("--neurons", "neurons", required=True, type=click.Path(path_type=str),
                       help="Neuron-set file (neurons.json).")
ALPHA = click.option("--alpha", type=float, default=None, callback=_alpha,
                     help="Scale for chosen neurons (0 silences, 1 leaves unchanged). "
                          "A neuron's own alpha in the file overrides it.")
NEG = click.option("--allow-negative-alpha", "allow_negative", is_flag=True,
                   help="Accept a negative alpha (flips the neurons' sign).")
OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
DEVICE = click.option("--device", default="cpu", show_default=True, callback=_device,
                      help="cpu, cuda, cuda:1, mps; checked before any work starts.")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hedit")
def main():
    """Find H-neurons in chat LLMs and write edited models that carry the fix with them."""


@main.command()
@SOURCE
@NEURONS
@ALPHA
@click.option("--out", required=True, type=click.Path(path_type=str), help="Output folder (created).")
@OVERWRITE
@NEG
@click.option("--quiet", is_flag=True, help="No progress bar.")
def edit(source, neurons, alpha, out, overwrite, allow_negative, quiet):
    """Fold alpha into down_proj columns of SOURCE, streaming: a safetensors checkpoint folder (built-in
    name, folder or Hub id) gives a folder; a .gguf file gives a .gguf file."""
    if source.endswith(".gguf"):
        from .gguf_edit import edit_gguf

        r = edit_gguf(source, neurons, out, alpha, overwrite, allow_negative, progress=not quiet)
        if r.requantized:
            click.echo(f"requantized the edited blocks of {len(r.tensors)} ffn_down tensors to "
                       f"{', '.join(r.requantized)}: max abs error {r.max_abs_error:.3g} against the exactly "
                       "scaled weights (every other block and tensor unchanged)")
        click.echo(f"wrote edited GGUF to {r.out} (provenance: {r.out}.hedit.json)")
        return
    from .edit import edit_checkpoint

    path = edit_checkpoint(source, neurons, out, alpha, overwrite, allow_negative, progress=not quiet)
    click.echo(f"wrote edited checkpoint to {path}")


@main.command("export-adapter")
@SOURCE
@NEURONS
@ALPHA
@click.option("--format", "fmt", type=click.Choice(["lora", "ia3"]), default="lora", show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=str), help="Output folder (created).")
@OVERWRITE
@NEG
def export_adapter(source, neurons, alpha, fmt, out, overwrite, allow_negative):
    """Write a PEFT adapter (exact LoRA or IA3) that applies the edit on top of SOURCE."""
    from .adapters import export_adapter as run

    path = run(source, neurons, out, fmt, alpha, overwrite, allow_negative)
    info = json.loads((path / "hedit.json").read_text())
    msg = f"wrote {fmt} adapter to {path}"
    if fmt == "lora":
        msg += f" (rank {info['lora_rank']}; vLLM: --max-lora-rank {info['vllm_max_lora_rank']})"
    click.echo(msg)


@main.command()
@SOURCE
@NEURONS
@ALPHA
@click.option("--edited", type=click.Path(path_type=str), help="Edited checkpoint from `hedit edit`.")
@click.option("--adapter", type=click.Path(path_type=str), help="Adapter from `hedit export-adapter`.")
@click.option("--runtime", type=click.Choice(["transformers", "vllm"]), default="transformers",
              show_default=True, help="Where to load the artifact.")
@click.option("--tolerance", type=float, default=None,
              help="Max abs logit (transformers; default 1e-4, or 1e-5 of the largest logit if more) or "
                   "logprob (vllm, default 1e-3) difference.")
@click.option("--new-tokens", type=click.IntRange(1, 512), default=8, show_default=True)
@click.option("--vllm-python", type=click.Path(path_type=str), help="Python of the vLLM environment.")
@NEG
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(source, neurons, alpha, edited, adapter, runtime, tolerance, new_tokens, vllm_python,
           allow_negative, as_json):
    """Check in float32 that an artifact equals SOURCE with the runtime intervention."""
    if runtime == "vllm":
        from .runtimes.vllm_check import LOGPROB_TOLERANCE, verify_vllm

        res = verify_vllm(source, neurons, alpha, edited, adapter, allow_negative, new_tokens, vllm_python,
                          tolerance if tolerance is not None else LOGPROB_TOLERANCE)
        line = (f"vllm: greedy-token agreement {res.token_agreement:.1%}, "
                f"max abs logprob diff {res.max_abs_logprob_diff:.2e} (tolerance {res.tolerance:g}), "
                f"edit effect {res.effect:.2e}")
    else:
        from .verify import verify as run

        res = run(source, neurons, alpha, edited, adapter, allow_negative, new_tokens, tolerance)
        line = (f"transformers: max abs logit diff {res.max_abs_logit_diff:.2e} (tolerance {res.tolerance:g}), "
                f"greedy-token agreement {res.token_agreement:.1%}, edit effect {res.effect:.2e}")
    click.echo(json.dumps(res.to_dict(), indent=2) if as_json else f"{'PASS' if res.passed else 'FAIL'} {line}")
    if res.effect == 0 and not as_json:
        click.echo("note: the edit changes nothing here (alpha 1?), so this check cannot fail", err=True)
    sys.exit(0 if res.passed else 1)


def _judge_options(f):
    opts = [
        click.option("--judge-url", default=None, metavar="URL",
                     help="Optional LLM judge: an OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1). "
                          "Default: the rule judge."),
        click.option("--judge-model", default=None, help="Model name for the LLM judge."),
        click.option("--judge-key-env", default="OPENAI_API_KEY", show_default=True,
                     help="Environment variable holding the judge's API key."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _grader(url, model, key_env):
    from .compliance import RULES
    from .llm_judge import LLMJudge

    if url is None:
        if model is not None:
            raise HeditError("--judge-model needs --judge-url")
        return RULES
    if not model:
        raise HeditError("--judge-url needs --judge-model")
    return LLMJudge(url, model, key_env)


@main.command()
@click.argument("model", type=str)
@click.option("--questions", type=click.Path(path_type=str), default=None,
              help="Question file (.jsonl, .csv, .parquet). Default: the bundled trivia set's train split.")
@click.option("--split", default=None, help="Use only this split of the question file.")
@click.option("--out", required=True, type=click.Path(path_type=str), help="Responses file (JSONL, appended).")
@click.option("--samples", type=click.IntRange(1), default=10, show_default=True)
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--top-p", type=float, default=0.9, show_default=True)
@click.option("--top-k", type=int, default=50, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(1), default=50, show_default=True)
@click.option("--suffix", default=None, help="Appended to each question (default: the paper's).")
@click.option("--no-chat-template", is_flag=True, help="Plain 'Question: ... Answer:' prompts.")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True, help="Questions per batch.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N questions.")
@click.option("--seed", type=int, default=0, show_default=True)
@DEVICE
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_judge_options
def collect(model, questions, split, out, samples, temperature, top_p, top_k, max_new_tokens, suffix,
            no_chat_template, batch_size, limit, seed, device, quiet, judge_url, judge_model, judge_key_env):
    """Sample answers of MODEL (built-in name, folder or Hub id) to questions, judge them; resumable."""
    from .collect import SUFFIX, SamplingConfig, collect as run
    from .models import load_model, load_tokenizer
    from .models_builtin import resolve_model
    from .questions import bundled_questions, load_questions

    path = resolve_model(model)
    qs = load_questions(questions, split) if questions else bundled_questions(split or "train")
    qs = qs[:limit] if limit else qs
    cfg = SamplingConfig(samples, temperature, top_p, top_k, max_new_tokens,
                         SUFFIX if suffix is None else suffix, not no_chat_template, seed)
    grader = _grader(judge_url, judge_model, judge_key_env)
    run(load_model(path, device=device), load_tokenizer(path), qs, out, cfg, batch_size, str(model), not quiet,
        grader)
    click.echo(f"wrote responses for {len(qs)} questions to {out}")


@main.command("filter")
@click.argument("responses", type=click.Path(path_type=str))
@click.option("--out", required=True, type=click.Path(path_type=str))
@click.option("--balance/--no-balance", "do_balance", default=True, show_default=True,
              help="Keep as many correct as hallucinated questions.")
@click.option("--seed", type=int, default=0, show_default=True)
def filter_cmd(responses, out, do_balance, seed):
    """Keep questions answered consistently right or consistently wrong; balance the two classes."""
    from .collect import balance, class_counts, consistent, read_responses

    header, records = read_responses(responses)
    if header is None:
        raise HeditError(f"responses file not found: {responses}")
    kept = consistent(records)
    kept = balance(kept, seed) if do_balance else kept
    with open(out, "w", encoding="utf-8") as f:
        f.write(json.dumps(header | {"filtered": {"balance": do_balance, "seed": seed}}) + "\n")
        f.writelines(json.dumps(r) + "\n" for r in kept)
    click.echo(f"kept {len(kept)} of {len(records)} questions {class_counts(kept)} -> {out}")


@main.command()
@click.argument("model", type=str)
@click.argument("responses", type=click.Path(path_type=str))
@click.option("--out", required=True, type=click.Path(path_type=str), help="Features folder (created).")
@click.option("--regions", default="answer,other", show_default=True, help="Token regions: answer, output, other.")
@click.option("--samples-per-question", type=click.IntRange(1), default=1, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
              help="Model compute dtype (CETT itself is always accumulated in float32).")
@DEVICE
@click.option("--quiet", is_flag=True)
def features(model, responses, out, regions, samples_per_question, batch_size, dtype, device, quiet):
    """CETT of every neuron, averaged per token region, for filtered RESPONSES of MODEL."""
    from .collect import consistent, read_responses
    from .features import extract
    from .models import DTYPES, load_model, load_tokenizer
    from .models_builtin import resolve_model
    from .spans import REGIONS

    names = tuple(r.strip() for r in regions.split(",") if r.strip())
    bad = [r for r in names if r not in REGIONS]
    if bad or not names:
        raise HeditError(f"unknown region {bad[0] if bad else regions!r}; choose from {', '.join(REGIONS)}")
    header, records = read_responses(responses)
    if header is None:
        raise HeditError(f"responses file not found: {responses}")
    if records and "class" not in records[0]:
        records = consistent(records)
    path = resolve_model(model)
    lm = load_model(path, DTYPES[dtype], device=device)
    extract(lm, load_tokenizer(path), records, out, str(model), names, samples_per_question, batch_size, device,
            not quiet)
    click.echo(f"wrote features to {out}")


@main.command()
@click.argument("features_dir", type=click.Path(path_type=str))
@click.option("--out", required=True, type=click.Path(path_type=str), help="neurons.json to write.")
@click.option("--mode", type=click.Choice(["3-vs-1", "1-vs-1"]), default="3-vs-1", show_default=True)
@click.option("--c", "c_values", default=None, help="Comma-separated C grid (default 0.01,0.03,0.1,0.3,1,3).")
@click.option("--random-draws", type=click.IntRange(1), default=5, show_default=True)
@click.option("--model", "for_model", default=None, help="Refuse features made from another model (name or folder).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--qa-model", default=None,
              help="Also check held-out QA accuracy of this model (name or folder) with each C's neurons silenced.")
@click.option("--qa-questions", default=None, type=click.Path(path_type=str),
              help="Questions for the QA check (default: the bundled trivia held-out split).")
@click.option("--qa-limit", type=click.IntRange(1), default=None, help="Only the first N QA questions.")
@click.option("--max-qa-drop", type=float, default=2.0, show_default=True,
              help="Pass over a C whose silenced neurons cost more QA accuracy than this (points).")
@click.option("--test-features", multiple=True, type=click.Path(path_type=str),
              help="Features of the same model on other questions (repeatable): score the probe, the H-neurons "
                   "alone and random neurons on them.")
@click.option("--quiet", is_flag=True)
def probe(features_dir, out, mode, c_values, random_draws, for_model, seed, qa_model, qa_questions, qa_limit,
          max_qa_drop, test_features, quiet):
    """Fit the sparse L1 probe on FEATURES_DIR and write the H-neurons."""
    from .features import check_features_model, open_features
    from .probe import C_GRID, run_probe

    if for_model is not None:
        from .io.checkpoint import read_config
        from .models_builtin import resolve_model
        from .registry import get_architecture

        cfg = read_config(resolve_model(for_model))
        arch = get_architecture(cfg.get("model_type"))
        check_features_model(open_features(features_dir)[0], (arch.model_type, *arch.shape(cfg)),
                             f"features in {features_dir}")
    grid = _floats(c_values) if c_values else C_GRID
    qa = None
    if qa_model is not None:
        from .capability import qa_checker
        from .models import load_model, load_tokenizer
        from .models_builtin import resolve_model
        from .questions import bundled_questions, load_questions

        path = resolve_model(qa_model)
        qs = load_questions(qa_questions) if qa_questions else bundled_questions("heldout")
        qs = qs[:qa_limit] if qa_limit else qs
        tok = load_tokenizer(path)
        if tok is None:
            raise HeditError(f"{path} has no tokenizer; the QA check needs one")
        qa = qa_checker(load_model(path), tok, [(q.question, q.aliases) for q in qs])
    r = run_probe(features_dir, out, mode, grid, random_draws, seed, not quiet, qa=qa, max_qa_drop=max_qa_drop,
                  test_features=test_features)
    _probe_summary(r, out)


def _floats(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise HeditError(f"not a comma-separated list of numbers: {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise HeditError("C values must be positive")
    return vals


def _auroc(m: dict) -> str:
    lo, hi = m["auroc_ci95"]
    return f"{m['auroc']:.3f} [{lo:.2f}, {hi:.2f}]"


def _probe_summary(r: dict, out: str) -> None:
    h, rnd = r["h_neurons_only"], r["random_neurons_only"]
    click.echo(f"{r['h_neurons']} H-neurons ({r['fraction_of_neurons']:.3%} of neurons), C={r['C']:g}, {r['mode']}")
    click.echo(f"held-out: accuracy {r['heldout']['accuracy']:.3f}, AUROC {_auroc(r['heldout'])}")
    if r.get("qa_check"):
        q = r["qa_check"]
        chosen = next(s for s in r["c_sweep"] if s["C"] == r["C"])
        click.echo(f"QA accuracy {q['qa_accuracy']:.3f} unedited, {chosen['qa_accuracy_silenced']:.3f} with these "
                   f"neurons silenced; C kept: {', '.join(f'{c:g}' for c in q['kept_C']) or 'none'}")
        if "warning" in q:
            click.echo(f"warning: {q['warning']}")
    click.echo(f"H-neurons only {h['accuracy']:.3f} vs random neurons {rnd['accuracy']['mean']:.3f} "
               f"+- {rnd['accuracy']['std']:.3f} (accuracy, {rnd['draws']} draws)")
    for name, t in r.get("transfer", {}).items():
        tr = t["random_neurons_only"]["auroc"]
        click.echo(f"on {name} ({t['answers']} answers, {t['hallucinated']} hallucinated): probe AUROC "
                   f"{_auroc(t['probe'])}; H-neurons only {_auroc(t['h_neurons_only'])} vs random neurons "
                   f"{tr['mean']:.3f} +- {tr['std']:.3f}")
    click.echo(f"wrote {out}, report.json, neurons_per_layer.png, c_sweep.png")


@main.command()
@click.argument("model", type=str, default="smollm2-135m-instruct")
@click.option("--questions", type=click.Path(path_type=str), default=None,
              help="Question file; default: the bundled trivia set (train split for collect).")
@click.option("--work", default="hedit-work", show_default=True, type=click.Path(path_type=str),
              help="Folder for the cached stages.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N questions.")
@click.option("--samples", type=click.IntRange(1), default=10, show_default=True)
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(1), default=50, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--mode", type=click.Choice(["3-vs-1", "1-vs-1"]), default="3-vs-1", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--qa-check", is_flag=True,
              help="Choose C also by held-out QA accuracy with the neurons silenced (see `hedit probe --qa-model`).")
@click.option("--max-qa-drop", type=float, default=2.0, show_default=True)
@DEVICE
@click.option("--quiet", is_flag=True)
@_judge_options
def identify(model, questions, work, limit, samples, temperature, max_new_tokens, batch_size, mode, seed, qa_check,
             max_qa_drop, device, quiet, judge_url, judge_model, judge_key_env):
    """Find the H-neurons of MODEL: collect, filter, features, probe (each stage cached in --work)."""
    from .collect import SamplingConfig
    from .identify import IdentifyConfig, identify as run
    from .questions import bundled_questions, load_questions

    qs = load_questions(questions) if questions else bundled_questions()
    qs = qs[:limit] if limit else qs
    cfg = IdentifyConfig(SamplingConfig(samples=samples, temperature=temperature, max_new_tokens=max_new_tokens,
                                        seed=seed), batch_size, mode, seed=seed, qa_check=qa_check,
                         max_qa_drop=max_qa_drop, device=device)
    r = run(model, qs, work, cfg, not quiet, log=click.echo, grader=_grader(judge_url, judge_model, judge_key_env))
    _probe_summary(r, f"{work}/neurons.json")


def _suite_options(f):
    opts = [
        click.option("--suites", default=",".join(("false-premise", "misleading-context", "sycophancy")),
                     show_default=True, help="Comma-separated suites; an empty string runs capability only."),
        click.option("--suite-file", "suite_files", multiple=True, metavar="NAME=PATH",
                     help="Use PATH (JSONL, CSV, FalseQA CSV) for suite NAME instead of the bundled set."),
        click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N items of each suite."),
        click.option("--max-new-tokens", type=click.IntRange(1), default=48, show_default=True),
        click.option("--sample", is_flag=True, help="Sample (temperature/top-p/top-k) instead of greedy decoding."),
        click.option("--temperature", type=float, default=1.0, show_default=True),
        click.option("--top-p", type=float, default=0.9, show_default=True),
        click.option("--top-k", type=int, default=50, show_default=True),
        click.option("--no-chat-template", is_flag=True, help="Plain 'Question: ... Answer:' prompts."),
        click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        DEVICE,
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _sweep_config(alphas, suites, controls, limit, max_new_tokens, sample, temperature, top_p, top_k,
                  no_chat_template, batch_size, seed, capability=True):
    from .generate import Decoding
    from .sweep import SweepConfig

    names = tuple(s.strip() for s in suites.split(",") if s.strip())
    dec = Decoding(max_new_tokens, sample, temperature, top_p, top_k, seed, not no_chat_template)
    return SweepConfig(alphas, names, controls, capability, limit, dec, batch_size, seed=seed)


def _suite_files(pairs) -> dict[str, str]:
    out = {}
    for p in pairs:
        name, sep, path = p.partition("=")
        if not sep or not name or not path:
            raise HeditError(f"--suite-file takes NAME=PATH, got {p!r}")
        out[name.strip()] = path
    return out


@main.command()
@click.argument("model", type=str)
@NEURONS
@click.option("--alphas", default="0,0.5,1,1.5,2,3", show_default=True, help="Comma-separated alphas.")
@click.option("--controls", type=click.IntRange(0), default=3, show_default=True,
              help="Random neuron sets with the H-neurons' per-layer counts.")
@click.option("--no-capability", is_flag=True, help="Skip trivia accuracy and KL.")
@click.option("--out", default="hedit-sweep", show_default=True, type=click.Path(path_type=str),
              help="Folder for cells.jsonl (resumable), sweep.json and sweep.png.")
@NEG
@_suite_options
@_judge_options
def sweep(model, neurons, alphas, controls, no_capability, out, allow_negative, suites, suite_files, limit,
          max_new_tokens, sample, temperature, top_p, top_k, no_chat_template, batch_size, seed, device, quiet,
          judge_url, judge_model, judge_key_env):
    """Compliance (per suite) and capability of MODEL at each alpha, H-neurons next to random controls."""
    from .sweep import parse_alphas, run_sweep, table

    cfg = _sweep_config(parse_alphas(alphas, allow_negative), suites, controls, limit, max_new_tokens, sample,
                        temperature, top_p, top_k, no_chat_template, batch_size, seed, not no_capability)
    summary = run_sweep(model, neurons, out, cfg, _suite_files(suite_files),
                        _grader(judge_url, judge_model, judge_key_env), progress=not quiet, log=click.echo,
                        device=device)
    click.echo(table(summary))
    click.echo(f"wrote {out}/sweep.json and {out}/sweep.png")


@main.command()
@click.argument("model", type=str)
@NEURONS
@click.option("--alphas", default="0,0.25,0.5,0.75,1", show_default=True, help="Candidate alphas (1 is added).")
@click.option("--max-accuracy-drop", type=float, default=2.0, show_default=True,
              help="Largest allowed drop of held-out trivia accuracy, in points.")
@click.option("--max-kl", type=float, default=0.1, show_default=True,
              help="Largest allowed mean KL against alpha 1 on neutral text (nats).")
@click.option("--work", default="hedit-tune", show_default=True, type=click.Path(path_type=str),
              help="Folder for the sweep it runs (resumable).")
@click.option("--out", default=None, type=click.Path(path_type=str),
              help="Write the tuned neurons file here (default: update --neurons in place).")
@NEG
@_suite_options
@_judge_options
def tune(model, neurons, alphas, max_accuracy_drop, max_kl, work, out, allow_negative, suites, suite_files, limit,
         max_new_tokens, sample, temperature, top_p, top_k, no_chat_template, batch_size, seed, device, quiet,
         judge_url, judge_model, judge_key_env):
    """Choose alpha for NEURONS on MODEL within capability bounds and write it into the neurons file."""
    from .sweep import parse_alphas
    from .tune import Bounds, tune as run

    cfg = _sweep_config(parse_alphas(alphas, allow_negative), suites, 0, limit, max_new_tokens, sample,
                        temperature, top_p, top_k, no_chat_template, batch_size, seed)
    d = run(model, neurons, work, cfg, Bounds(max_accuracy_drop, max_kl), out, _suite_files(suite_files),
            _grader(judge_url, judge_model, judge_key_env), progress=not quiet, log=click.echo, device=device)
    for r in d["candidates"]:
        comp = "-" if r["compliance"] is None else f"{r['compliance']:.3f}"
        state = "ok" if r["within_bounds"] else "; ".join(r["rejected_because"])
        acc = "-" if r["trivia_accuracy"] is None else (f"{r['trivia_accuracy']:.3f} "
                                                        f"({-r['accuracy_drop_points']:+.1f} pts vs alpha 1)")
        click.echo(f"alpha {r['alpha']:<5g} compliance {comp}  trivia accuracy {acc}  KL {r['kl']:.4f}  {state}")
    click.echo(f"alpha = {d['alpha']:g}: {d['reason']}")
    click.echo(f"wrote alpha into {out or neurons}; `hedit edit` uses it when --alpha is not given")


@main.command()
@click.argument("folder", type=click.Path(path_type=str))
@click.option("--repo-id", required=True, help="owner/name on the Hub (created if missing).")
@click.option("--private", is_flag=True, help="Create the repo as private.")
@click.option("--revision", default=None, help="Branch to push to (created from main if missing).")
@click.option("--commit-message", default=None)
@click.option("--force", is_flag=True, help="Push a folder without hedit.json or a model card.")
def push(folder, repo_id, private, revision, commit_message, force):
    """Upload an edited checkpoint or adapter FOLDER to the Hugging Face Hub (token: HF_TOKEN or login)."""
    from .push import push as run

    r = run(folder, repo_id, private, revision, commit_message, force)
    click.echo(f"pushed {r.kind} ({len(r.files)} files) to {r.repo_id}@{r.revision}: {r.commit_url}")


@main.command("run")
@click.argument("recipe", type=click.Path(path_type=str))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set identify.samples=5 --set tune.alphas=[0,0.5,1].")
@click.option("--model", default=None, help="Override the recipe's model.")
@click.option("--work", default=None, type=click.Path(path_type=str), help="Override the recipe's work folder.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_judge_options
def run_cmd(recipe, overrides, model, work, quiet, judge_url, judge_model, judge_key_env):
    """Run a recipe: identify, tune, edit, export-adapter and verify, each stage cached."""
    from .pipeline import run_recipe
    from .recipe import load_recipe

    extra = list(overrides) + ([f"model={json.dumps(model)}"] if model else []) + \
        ([f"work={json.dumps(work)}"] if work else [])
    r = run_recipe(load_recipe(recipe, extra), not quiet, click.echo, _grader(judge_url, judge_model, judge_key_env))
    click.echo(f"done: artifacts in {r['work']}: {', '.join(r['artifacts']) or 'none'}; "
               f"alpha {r['tune']['alpha']:g}; {r['work']}/reproduce.json")


@main.command()
def architectures():
    """List the supported model_types and where their down-projections live."""
    from .registry import architectures as archs

    for a in archs().values():
        click.echo(f"{a.model_type:12s} {a.layers_module}.N.{a.down_proj}")


if __name__ == "__main__":
    main()
