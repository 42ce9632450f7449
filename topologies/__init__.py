"""Mininet topology scripts, one file per topology; each also runs under `mn --custom`.

`load_topology(spec)` turns what a user passes to `--topology` into a topology class: a
built-in name (`isp_cdn`, `two_pops`: the module `topologies/<name>.py`, class `topos[name]`)
or a file, `path/to/file.py[:Class]`, the way `mn --custom file.py --topo name` finds one.
The class must be a `topologies.base.GraphTopo` (a Mininet Topo that exports `Roles`).
The application layer resolves the name and hands the class to `testbed.network.Network`,
which never imports this package.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

from testbed.errors import ParameterError, UsageError
from testbed.roles import register_topology_resolver
from testbed.scenario import TOPOLOGIES as TOPOLOGY_NAMES

PARAMETER = "topology"


def _allowed() -> str:
    return "one of " + ", ".join(TOPOLOGY_NAMES) + " or path/to/file.py[:Class]"


def is_file_spec(spec: str) -> bool:
    """True when `spec` names a file (`x.py` or `x.py:Class`) rather than a built-in."""
    return spec.split(":", 1)[0].endswith(".py")


def absolute_spec(spec: str) -> str:
    """The same spec with its file made absolute (a detached controller runs elsewhere)."""
    if not is_file_spec(spec):
        return spec
    path, _, cls = spec.partition(":")
    return str(Path(path).expanduser().resolve()) + (f":{cls}" if cls else "")


def load_topology(spec: str) -> type:
    """The topology class `spec` names. Raises ParameterError/UsageError naming `topology`."""
    if not isinstance(spec, str) or not spec:
        raise ParameterError(PARAMETER, spec, _allowed())
    if not is_file_spec(spec):
        if spec not in TOPOLOGY_NAMES:
            raise ParameterError(PARAMETER, spec, _allowed())
        module = importlib.import_module(f"topologies.{spec}")
        return _check(spec, getattr(module, "topos", {}).get(spec), spec)
    path_text, _, cls_name = spec.partition(":")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise UsageError(f"--{PARAMETER} {spec}: no such file {path} (allowed: {_allowed()})")
    module = _import_file(path)
    if cls_name:
        obj = getattr(module, "topos", {}).get(cls_name) or getattr(module, cls_name, None)
        if obj is None:
            raise UsageError(f"--{PARAMETER} {spec}: {path} defines no class or topos entry "
                             f"{cls_name!r}; it has: {', '.join(_candidates(module)) or 'none'}")
        return _check(spec, obj, cls_name)
    found = _candidates(module)
    if len(found) != 1:
        what = f"several ({', '.join(found)}): add :Class" if found else "none"
        raise UsageError(f"--{PARAMETER} {spec}: {path} must define exactly one GraphTopo "
                         f"subclass (a Topo with roles) or `topos` entry; found {what}")
    obj = getattr(module, "topos", {}).get(found[0]) or getattr(module, found[0])
    return _check(spec, obj, found[0])


def _import_file(path: Path) -> ModuleType:
    """Import a user's topology file under a name unique to its path (no clash on re-load)."""
    resolved = path.resolve()
    name = "cfrbench_topology_" + hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise UsageError(f"--{PARAMETER} {path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file failed: say where, not a traceback
        del sys.modules[name]
        raise UsageError(f"--{PARAMETER} {path}: importing it failed: "
                         f"{type(exc).__name__}: {exc}") from None
    return module


def _candidates(module: ModuleType) -> list[str]:
    """Names of the topologies a module offers: its `topos` keys, else its GraphTopo classes."""
    from topologies.base import GraphTopo

    topos = getattr(module, "topos", None)
    if isinstance(topos, dict) and topos:
        return list(topos)
    return [n for n, obj in vars(module).items()
            if inspect.isclass(obj) and issubclass(obj, GraphTopo) and obj is not GraphTopo
            and obj.__module__ == module.__name__]


def _check(spec: str, obj: object, name: str) -> type:
    from mininet.topo import Topo

    from topologies.base import GraphTopo

    if not (inspect.isclass(obj) and issubclass(obj, Topo)):
        raise UsageError(f"--{PARAMETER} {spec}: {name} is not a Mininet Topo class")
    if not issubclass(obj, GraphTopo) or obj.describe is GraphTopo.describe:
        raise UsageError(f"--{PARAMETER} {spec}: {name} is a Topo without roles; subclass "
                         "topologies.base.GraphTopo and implement describe(scenario) -> "
                         "(NetworkGraph, Roles) (see topologies/README.md)")
    return obj


def topology_class(name: str) -> type:
    """Former name of `load_topology` (kept for callers not yet moved)."""
    return load_topology(name)


register_topology_resolver(load_topology)
