"""The package's structure, read from its imports (every `import`, module level or inside a
function): arrows point down, no cycles, and the few function-local imports say why.

Layers (README, "How the pieces fit"): CLIs (main, evaluate, export) -> run (setup, train) ->
{methods, evaluation} -> {losses, models, data, optim, sharding, checkpoint, ...}.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "sslax")

CLIS = ("sslax.main", "sslax.evaluate", "sslax.export")
RUN = ("sslax.setup", "sslax.train")
EVALUATION = ("sslax.evaluation",)


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
  return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _modules() -> dict[str, str]:
  found = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        found[_module_name(path)] = path
  return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
  """A dotted name -> the sslax module it names (`from a.b import c`: a.b.c if a module)."""
  while name and name not in MODULES:
    name = name.rpartition(".")[0]
  return name or None


def _imports(module: str):
  """Yields (imported sslax module, line number, is_function_local)."""
  path = MODULES[module]
  tree = ast.parse(open(path).read(), path)
  local_lines = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      for inner in ast.walk(node):
        if isinstance(inner, (ast.Import, ast.ImportFrom)):
          local_lines.add(inner.lineno)
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")
        base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
      names = [f"{base}.{a.name}" for a in node.names]
    for name in names:
      target = _resolve(name) if name.startswith("sslax") else None
      # The root package only holds __version__ and the lazy `sslax.load_encoder`.
      if target and target not in (module, "sslax"):
        yield target, node.lineno, node.lineno in local_lines


def _within(module: str, prefixes) -> bool:
  return any(module == p or module.startswith(p + ".") for p in prefixes)


RULES = [
  # (importers, forbidden imports, why)
  (
    ("sslax.methods", "sslax.losses", "sslax.models", "sslax.data", "sslax.pretext"),
    RUN + EVALUATION + CLIS,
    "methods, losses, models and data sit below the trainer, evaluation and the CLIs",
  ),
  (EVALUATION, RUN + CLIS + ("sslax.methods",), "evaluation takes encoders; it never trains"),
  (("sslax.train",), EVALUATION + CLIS, "the trainer trains; main runs the end-of-run report"),
  (("sslax.setup",), EVALUATION + CLIS, "setup builds the run; evaluation is the CLIs' call"),
]


@pytest.mark.parametrize("importers, forbidden, why", RULES)
def test_imports_point_down(importers, forbidden, why):
  bad = [
    f"{module}:{line} imports {target}"
    for module in MODULES
    if _within(module, importers)
    for target, line, _ in _imports(module)
    if _within(target, forbidden)
  ]
  assert not bad, f"{why}:\n  " + "\n  ".join(bad)


def test_no_import_cycles():
  graph = {m: {t for t, _, _ in _imports(m)} for m in MODULES}
  # Tarjan's strongly connected components; any component of 2+ modules is a cycle.
  index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        cycles.append(sorted(component))

  for v in graph:
    if v not in index:
      visit(v)
  assert not cycles, f"import cycles: {cycles}"


def test_function_local_imports_say_why():
  """A function-local `sslax` import is allowed only for a start-up-order reason, written as a
  `# local: ...` comment on its line or the line above."""
  bad = []
  for module, path in MODULES.items():
    lines = open(path).read().splitlines()
    for _, line, is_local in _imports(module):
      if not is_local:
        continue
      context = lines[line - 1] + (lines[line - 2] if line >= 2 else "")
      if "# local:" not in context:
        bad.append(f"{module}:{line}: {lines[line - 1].strip()}")
  assert not bad, "function-local sslax imports without a `# local: <reason>` comment:\n  " + (
    "\n  ".join(sorted(set(bad)))
  )


def test_the_rules_see_real_imports():
  """The reader is not blind: it finds the trainer's import of setup and a method's of losses."""
  assert "sslax.setup" in {t for t, _, _ in _imports("sslax.train")}
  assert "sslax.losses" in {t for t, _, _ in _imports("sslax.methods.simclr")}
