"""hedit: find H-neurons in chat LLMs and write edited models that carry the fix with them.

The package follows the pipeline; stages sit on shared layers, and each layer imports only from the
layers below it (``tests/test_layers.py`` holds the order):

    cli/      the command line, one module per stage, over the Python API
    run/      recipes, `hedit run`, the demo
    ship/     `hedit push`
    choose/   tune: the alpha to ship, under capability bounds
    measure/  sweeps of alpha against behaviour suites, with random-neuron controls
    find/     collect, spans, features, probe, identify, origin
    check/    verify an artifact: transformers, vLLM, or its bytes (structure)
    edit/     writers of one shape, found by name (checkpoint, quantized, GGUF, LoRA, IA3), one plan
    score/    judges, compliance rules, the LLM judge, behaviour suites, capability, statistics
    engine/   generation (one decoder, prompts, one vLLM client), the intervention hooks, engine choice
    neurons.py  the neuron-set file: the contract between finding and editing
    model/    loading models, built-in models, tiny test models
    io/       files: atomic outputs, safetensors and GGUF headers, checkpoints, journals, questions, the Hub
    config.py, registry.py, errors.py, progress.py, paths.py: settings, architectures, errors, bars, cache
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

# Documented import paths from before the package was split by stage; each still works and is the same
# module object as its new home.
MOVED = {
    "hedit.adapters": "hedit.edit.adapters",
    "hedit.edit.neurons": "hedit.neurons",
    "hedit.check.intervention": "hedit.engine.intervention",
    "hedit.measure.generate": "hedit.engine.decoder",
    "hedit.measure.engines": "hedit.engine.choice",
    "hedit.measure.judge": "hedit.score.judge",
    "hedit.measure.compliance": "hedit.score.compliance",
    "hedit.measure.llm_judge": "hedit.score.llm_judge",
    "hedit.measure.suites": "hedit.score.suites",
    "hedit.measure.stats": "hedit.score.stats",
    "hedit.measure.capability": "hedit.score.capability",
    "hedit.measure.tune": "hedit.choose.tune",
    "hedit.intervention": "hedit.engine.intervention",
    "hedit.verify": "hedit.check.verify",
    "hedit.sweep": "hedit.measure.sweep",
    "hedit.tune": "hedit.choose.tune",
    "hedit.identify": "hedit.find.identify",
    "hedit.probe": "hedit.find.probe",
}


class _Moved(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module):
        pass


if not any(isinstance(f, _Moved) for f in sys.meta_path):
    sys.meta_path.insert(0, _Moved())  # before the path finders: a stale folder of an old name never wins
