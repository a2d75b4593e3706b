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
  Name the variable holding its input folder in ``NOTEBOOK_INPUT_VARIABLE`` as well: the notebook
  is then also run with that folder missing, and must stop in its first code cell with a
  ``FileNotFoundError`` naming the folder (a one-line message, not a traceback from deep inside).

The inputs of 02-04: one smoke training run with label cleaning (``smoke_label_run``, about 20 s)
feeds both the training analysis and the label-error notebook; the noise-robustness notebook reads
a small synthetic ``results.csv`` (``write_synthetic_sweep``), since even the smoke-scale sweep
trains for minutes.
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
NOTEBOOK_INPUTS: dict[str, str] = {
    "02_training_analysis.ipynb": "smoke_run_env",
    "03_label_errors.ipynb": "smoke_label_run_env",
    "04_noise_robustness.ipynb": "synthetic_sweep_env",
}
#: Notebook file name -> the variable naming its input folder (checked: a missing folder stops
#: the notebook in its first code cell with a one-line message naming the folder).
NOTEBOOK_INPUT_VARIABLE: dict[str, str] = {
    "02_training_analysis.ipynb": "REALBOGUS_NOTEBOOK_RUN",
    "03_label_errors.ipynb": "REALBOGUS_NOTEBOOK_LABEL_RUN",
    "04_noise_robustness.ipynb": "REALBOGUS_NOTEBOOK_SWEEP",
}
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


# ---------------------------------------------------------------------------- inputs of 02, 03, 04
#: The one smoke training run behind notebooks 02 and 03: the simple network with CE + VAT and the
#: paper's label handling (out-of-fold suspects unlabelled), with a two-fold, one-epoch stage 1 and
#: two short epochs of stage 2. The numbers mean nothing; every file the notebooks read is written.
SMOKE_RUN_OVERRIDES = [
    "data=smoke", "data.source=hdf5", "model=simple", "loss=ce_vat",
    "label_cleaning=predicted_neq_given", "label_treatment=unlabel",
    "label_cleaning.folds=2", "label_cleaning.trainer.epochs=1", "label_cleaning.trainer.batch_size=128",
    "trainer.epochs=2", "trainer.steps_per_epoch=8", "trainer.batch_size=64", "trainer.n_bootstrap=20",
    "trainer.progress=none",
]


def train_smoke_label_run(data_dir: Path, work_dir: Path) -> Path:
    """Train the smoke run of ``SMOKE_RUN_OVERRIDES`` on ``data_dir`` into ``work_dir/<run_name>``
    (stage-1 cache in ``work_dir/cache``); return the run folder."""
    from hydra import compose, initialize_config_dir

    from realbogus.train import train as run_training

    overrides = [*SMOKE_RUN_OVERRIDES, f"data.dir={data_dir}", f"label_cleaning.cache_dir={work_dir / 'cache'}"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    run_dir = work_dir / cfg.run_name
    run_training(cfg, run_dir)
    return run_dir


@pytest.fixture(scope="session")
def smoke_label_run(smoke_notebook_data, tmp_path_factory) -> Path:
    """The smoke training run with label cleaning (trained once per session)."""
    return train_smoke_label_run(smoke_notebook_data, tmp_path_factory.mktemp("notebook_run"))


@pytest.fixture(scope="session")
def smoke_run_env(smoke_label_run) -> dict:
    return {"REALBOGUS_NOTEBOOK_RUN": str(smoke_label_run)}


@pytest.fixture(scope="session")
def smoke_label_run_env(smoke_label_run) -> dict:
    return {"REALBOGUS_NOTEBOOK_LABEL_RUN": str(smoke_label_run)}


def write_synthetic_sweep(folder: Path) -> Path:
    """A noise-sweep folder whose ``results.csv`` and ``summary.csv`` hold SYNTHETIC test input.

    Training the smallest real sweep takes minutes, so the cells are made up here: two methods,
    noise multiples 0, 5 and 20, two seeds, plausible numbers (AUC falling and FPR rising with
    the noise, faster for labels kept than for suspects unlabelled), plus one unfinished cell.
    They go through the sweep's own writers (``realbogus.label_noise.robustness``), so the files
    have exactly the columns ``python -m realbogus.noise_sweep`` writes; the notebook then
    summarises them and draws the figure with the real code. No conclusion follows from them.
    """
    from realbogus.label_noise.robustness import RESULT_COLUMNS, summarise, write_results, write_summary

    nan = float("nan")
    base_rate = {"bogus": 0.006, "real": 0.010}
    methods = {  # method -> (AUC at zero noise, AUC lost per x1 of noise, FPR at zero noise, FPR growth per x1)
        "complex_ce_ech_vat_keep": (0.995, 0.0012, 4e-3, 0.12),
        "complex_ce_ech_vat_unlabel": (0.996, 0.0003, 3e-3, 0.03),
    }
    rows = []
    for method, (auc0, auc_slope, fpr0, fpr_growth) in methods.items():
        cleaning = method.endswith("unlabel")
        for rate in (0, 5, 20):
            for seed in (0, 1):
                jitter = 1 + 0.05 * (seed - 0.5)
                fpr = fpr0 * (1 + fpr_growth * rate) * jitter
                row = dict.fromkeys(RESULT_COLUMNS, nan)
                row.update(
                    method=method, noise_mode="boundary", noise_rate=rate, seed=seed, status="done",
                    auc=auc0 - auc_slope * rate * jitter, **{"fpr_at_tpr_0.9": fpr}, bogus_per_night=fpr * 1e6,
                    label_error_rate_bogus=base_rate["bogus"] * (1 + rate), label_error_rate_real=base_rate["real"] * (1 + rate),
                    label_error_rate=0.0075 * (1 + rate), injected_rate_bogus=base_rate["bogus"] * rate,
                    injected_rate_real=base_rate["real"] * rate, n_injected=round(75 * rate),
                    detection_rule="predicted_neq_given" if cleaning else "",
                    epochs_trained=3, wall_seconds=600.0 + 10 * seed,
                    run_dir=f"synthetic/{method}-x{rate}-s{seed}",
                )
                if cleaning:
                    row.update(detection_precision=0.11 + 0.02 * rate, detection_recall=0.87 - 0.004 * rate,
                               n_suspected=6000 + 400 * rate, injected_recall=nan if rate == 0 else 0.9)
                rows.append(row)
    unfinished = dict.fromkeys(RESULT_COLUMNS, nan)  # a cell still training: no metrics yet
    unfinished.update(method="complex_ce_ech_vat_keep", noise_mode="boundary", noise_rate=20, seed=2,
                      status="running", detection_rule="", run_dir="synthetic/running")
    rows.append(unfinished)
    folder.mkdir(parents=True, exist_ok=True)
    write_results(folder / "results.csv", rows)
    write_summary(folder / "summary.csv", summarise(rows))
    return folder


@pytest.fixture(scope="session")
def synthetic_sweep_env(tmp_path_factory) -> dict:
    return {"REALBOGUS_NOTEBOOK_SWEEP": str(write_synthetic_sweep(tmp_path_factory.mktemp("notebook_sweep")))}


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


def execute_notebook(path: Path):
    """Execute ``path`` in a fresh kernel; return the executed notebook and the error text of the
    failing cell (None when every cell ran)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, km=kernel_manager(), timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
        return nb, None
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        return nb, ANSI_COLOUR.sub("", str(exc))


def run_notebook(path: Path, out_dir: Path) -> None:
    """Execute ``path`` in a fresh kernel; on failure, fail with the cell's error and keep the
    executed copy in ``out_dir`` for inspection."""
    import nbformat

    nb, error = execute_notebook(path)
    if error is None:
        return
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
    unknown = (set(NOTEBOOK_INPUTS) | set(NOTEBOOK_INPUT_VARIABLE) | SLOW_NOTEBOOKS) - {nb.name for nb in NOTEBOOKS}
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


@pytest.mark.parametrize("notebook", cases([nb for nb in NOTEBOOKS if nb.name in NOTEBOOK_INPUT_VARIABLE]))
def test_notebook_stops_clearly_without_its_input(notebook: Path, smoke_notebook_data, monkeypatch, tmp_path):
    # No fixture is built here: the input folder is simply missing.
    monkeypatch.setenv("REALBOGUS_NOTEBOOK_DATA", str(smoke_notebook_data))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    missing = tmp_path / "no_such_folder"
    monkeypatch.setenv(NOTEBOOK_INPUT_VARIABLE[notebook.name], str(missing))
    nb, error = execute_notebook(notebook)
    assert error is not None, f"{notebook.name} ran without its input folder"
    ran = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and cell.execution_count is not None]
    first_code = next(i for i, cell in enumerate(nb.cells) if cell.cell_type == "code")
    assert ran == [first_code], f"{notebook.name} should stop in its first code cell; ran cells {ran}"
    message = error.strip().splitlines()[-1]
    assert message.startswith("FileNotFoundError") and str(missing) in message, message


@pytest.mark.parametrize("notebook", cases([nb for nb in NOTEBOOKS if reads_ztf(nb)]))
def test_notebook_runs_without_ztf(notebook: Path, smoke_notebook_data, request, monkeypatch, tmp_path):
    notebook_env(request, monkeypatch, notebook, smoke_notebook_data)
    monkeypatch.setenv("REALBOGUS_ZTF", str(tmp_path / "no_such_ztf_file.npz"))
    run_notebook(notebook, tmp_path)
