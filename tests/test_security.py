"""Static safety checks over the package: no eval/exec, no unsafe YAML, safe torch.load only,
servers bound to localhost by default."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "hat_ray"


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield node, owner, name


def test_no_eval_exec_unsafe_yaml_or_unsafe_torch_load():
    problems = []
    files = sorted(PKG.rglob("*.py"))
    assert len(files) > 10
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, owner, name in _calls(tree):
            where = f"{path.relative_to(PKG.parent)}:{node.lineno}"
            if isinstance(node.func, ast.Name) and name in ("eval", "exec", "compile", "__import__"):
                problems.append(f"{where}: {name}()")
            if owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load"):
                problems.append(f"{where}: yaml.{name} (use yaml.safe_load)")
            if owner in ("pickle", "cPickle", "dill") and name in ("load", "loads"):
                problems.append(f"{where}: {owner}.{name} on data")
            if owner == "torch" and name == "load":
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                if not ok:
                    problems.append(f"{where}: torch.load without weights_only=True")
    assert problems == []


def test_local_ray_dashboard_binds_localhost(monkeypatch):
    import ray

    from hat_ray import cluster

    calls = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("HAT_RAY_DASHBOARD", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    assert cluster.connect() is True  # starts a local instance (ray.init is faked: nothing starts)
    assert calls[0]["dashboard_host"] == "127.0.0.1" and calls[0]["include_dashboard"] is not False
    assert calls[0]["address"] == "local"  # a new instance, never someone else's Ray on this machine
    src = "\n".join(p.read_text() for p in PKG.rglob("*.py"))
    assert "0.0.0.0" not in src
