"""hedit: find H-neurons in chat LLMs and write edited models that carry the fix with them.

The package follows the pipeline; each layer imports only from the layers below it:

    cli/      the command line, one module per stage, over the Python API
    run/      recipes, `hedit run`, the demo
    ship/     `hedit push`
    find/     collect, spans, features, probe, identify
    measure/  generation, judges, suites, capability, sweep, tune, statistics
    check/    the runtime intervention, verify (transformers, vLLM)
    edit/     the neuron-set file, edit plans, the scaling math, checkpoint / adapter / GGUF writers
    model/    loading models, built-in models, tiny test models
    io/       files: atomic outputs, safetensors headers, checkpoints, journals, question files, the Hub
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
    "hedit.neurons": "hedit.edit.neurons",
    "hedit.intervention": "hedit.check.intervention",
    "hedit.verify": "hedit.check.verify",
    "hedit.sweep": "hedit.measure.sweep",
    "hedit.tune": "hedit.measure.tune",
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
