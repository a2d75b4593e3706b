"""Execute every notebook in ``notebooks/`` top to bottom on smoke-scale inputs.

Each ``notebooks/*.ipynb`` is found by the glob below (a new notebook is tested without touching
this file) and run in a fresh ``python3`` kernel started with this interpreter, from the
``notebooks/`` folder, the way Jupyter would. A failing cell fails the test with that cell's
source and traceback.

Inputs reach a notebook through environment variables, as they would for a reader:

- every notebook gets ``REALBOGUS_NOTEBOOK_DATA``, a smoke dataset simulated once per session.
  ``REALBOGUS_ZTF`` is left alone, so the real ZTF triplets are used where ``../shared/data``
  exists, and a notebook that reads it runs a second time with ``REALBOGUS_ZTF`` pointing at a
  missing file, to check that its ZTF cells skip.
- a notebook that needs more (a trained run folder, predictions, a noise sweep) declares it in
  ``NOTEBOOK_INPUTS``: its file name -> the name of a pytest fixture returning the extra
  environment variables. Write the fixture in this file or in ``conftest.py`` (session-scoped
  when other tests can share its results), for example::

      @pytest.fixture(scope="session")
      def smoke_run_env(smoke_notebook_data, tmp_path_factory):
          run_dir = ...  # a smoke-sized training run on smoke_notebook_data
          return {"REALBOGUS_NOTEBOOK_RUN": str(run_dir)}

      NOTEBOOK_INPUTS = {"02_training_analysis.ipynb": "smoke_run_env"}

  and add the notebook to ``SLOW_NOTEBOOKS`` if preparing or running it takes more than about 30 s.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

#: Notebook file name -> name of a fixture returning extra environment variables (see above).
NOTEBOOK_INPUTS: dict[str, str] = {}
#: Notebooks run only with ``-m slow`` (their inputs or cells take long).
SLOW_NOTEBOOKS: set[str] = set()
#: Seconds a single cell may run before the test fails.
CELL_TIMEOUT = 300

#: Terminal colour codes in IPython tracebacks (dropped from failure messages).
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
#: The smoke dataset's sizes (conf/data/smoke.yaml), simulated with one worker to spare the cores.
SMOKE_SIMULATION = {"train": {"n_real": 1128, "n_bogus": 1872}, "test": {"n_real": 150, "n_bogus": 3000},
                    "workers": 1}


def cases(notebooks=NOTEBOOKS) -> list:
    """One test case per notebook, marked slow for those in SLOW_NOTEBOOKS."""
    return [pytest.param(nb, id=nb.stem, marks=[pytest.mark.slow] if nb.name in SLOW_NOTEBOOKS else [])
            for nb in notebooks]


def reads_ztf(notebook: Path) -> bool:
    """Whether a notebook takes the ZTF triplets from ``REALBOGUS_ZTF`` (then it runs twice)."""
    return "REALBOGUS_ZTF" in notebook.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def smoke_notebook_data(tmp_path_factory) -> Path:
    """A smoke-scale simulated dataset (``train.h5``, ``test.h5``) shared by all notebooks."""
    from realbogus.simulation import ensure_dataset

    folder = tmp_path_factory.mktemp("notebook_smoke")
    ensure_dataset({"dir": str(folder), "source": "simulate", "simulation": SMOKE_SIMULATION},
                   log=None, progress=False)
    return folder


def kernel_manager():
    """A kernel manager whose ``python3`` kernel runs this interpreter (the project's venv),
    whatever kernel specs are installed elsewhere on the machine."""
    import importlib.util

    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager

    if importlib.util.find_spec("ipykernel") is None:
        pytest.fail(f"ipykernel is not importable by {sys.executable}: install requirements.txt", pytrace=False)
    spec = KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                      display_name=f"Python 3 ({sys.executable})", language="python")

    class ThisInterpreter(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return spec

    return KernelManager(kernel_name="python3", kernel_spec_manager=ThisInterpreter())


def run_notebook(path: Path, out_dir: Path) -> None:
    """Execute ``path`` in a fresh kernel; on failure, fail with the cell's error and keep the
    executed copy in ``out_dir`` for inspection."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, km=kernel_manager(), timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
        return
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        error = ANSI_COLOUR.sub("", str(exc))
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    pytest.fail(f"{path.name} failed (executed copy: {out_dir / path.name}):\n{error}", pytrace=False)


def notebook_env(request, monkeypatch, notebook: Path, data: Path) -> None:
    """Set the environment the notebook's kernel inherits: smoke data plus declared inputs."""
    monkeypatch.setenv("REALBOGUS_NOTEBOOK_DATA", str(data))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    if notebook.name in NOTEBOOK_INPUTS:
        for key, value in request.getfixturevalue(NOTEBOOK_INPUTS[notebook.name]).items():
            monkeypatch.setenv(key, str(value))


def test_notebooks_are_found_and_inputs_match():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"
    unknown = (set(NOTEBOOK_INPUTS) | SLOW_NOTEBOOKS) - {nb.name for nb in NOTEBOOKS}
    assert not unknown, f"inputs or slow marks declared for missing notebooks: {sorted(unknown)}"


@pytest.mark.parametrize("notebook", cases())
def test_notebook_is_saved_clean(notebook: Path):
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    assert nb.cells and nb.cells[0].cell_type == "markdown", f"{notebook.name}: should open with what it shows"
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"{notebook.name}: cells {dirty} hold outputs; clear them before committing"


@pytest.mark.parametrize("notebook", cases())
def test_notebook_runs(notebook: Path, smoke_notebook_data, request, monkeypatch, tmp_path):
    notebook_env(request, monkeypatch, notebook, smoke_notebook_data)
    run_notebook(notebook, tmp_path)


@pytest.mark.parametrize("notebook", cases([nb for nb in NOTEBOOKS if reads_ztf(nb)]))
def test_notebook_runs_without_ztf(notebook: Path, smoke_notebook_data, request, monkeypatch, tmp_path):
    notebook_env(request, monkeypatch, notebook, smoke_notebook_data)
    monkeypatch.setenv("REALBOGUS_ZTF", str(tmp_path / "no_such_ztf_file.npz"))
    run_notebook(notebook, tmp_path)
