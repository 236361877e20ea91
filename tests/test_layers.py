"""Imports run one way: the job (embeddings/) and the app (explorer/) build on ice/, the job
never imports the app, the app loads no torch, and the job loads it only where a stage needs it."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(folder: str) -> dict[str, set[str]]:
    """For each module under ROOT/folder, the top-level names of the absolute imports in it,
    at any depth (an import inside a function counts)."""
    found = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_the_job_never_imports_the_explorer():
    offenders = [path for path, names in imported_modules("embeddings").items() if "explorer" in names]
    assert not offenders


def test_ice_imports_neither_layer_at_module_level():
    """ice/ may reach embeddings/ and explorer/ inside a function (the CLI's commands, the
    API's loaders), never as the module loads, so both can import it."""
    offenders = []
    for path in sorted((ROOT / "ice").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("embeddings", "explorer", "torch")]
    assert not offenders


def test_importing_the_explorer_loads_no_torch():
    code = "import sys, ice, explorer.app, explorer.serve, explorer.export; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_jobs_driver_loads_torch_only_when_a_stage_needs_it():
    """The stages and the Ray engine load torch in the functions that use it, so that a driver
    whose stages run on Ray holds none beside the actors that do."""
    code = "import sys, ice.cli, embeddings.pipeline, embeddings.stages, embeddings.ray_engine\n"
    code += "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_jobs_driver_loads_scikit_learn_and_scipy_at_its_fits():
    """embeddings.cluster imports sklearn and scipy in the functions that use them: the job's
    process holds neither through the stages before its fits, when the Ray
    engine's processes run beside it."""
    code = "import sys, ice.cli, embeddings.pipeline, embeddings.stages, embeddings.ray_engine\n"
    code += "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
