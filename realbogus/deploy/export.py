"""Export a trained network as a TensorFlow SavedModel for serving.

    python -m realbogus.deploy.export MODEL OUT_DIR [--overwrite]

``MODEL`` is a run folder or a ``.keras`` file. The SavedModel's default signature
``serving_default`` takes ``stamps``, float32 (None, 29, 29, 3) raw counts (channels new, ref,
diff), and returns

- ``logits``: float32 (None, 2), [bogus, real];
- ``score``: float64 (None,), ``softmax(logits)[:, 1]``, the probability of real (the float64
  value the package writes; float32 would round every margin above about 17 to 1.0);
- ``calibrated_score``: float64 (None,), ``sigmoid(margin / temperature)``, when the model's card
  holds a temperature.

The card, when there is one, is copied into the folder as ``model_card.json``. Loading needs
TensorFlow only (``tf.saved_model.load(OUT_DIR).signatures["serving_default"]``), not this
package nor Keras. The folder appears complete or not at all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from realbogus.errors import DataError, report_errors

__all__ = ["export_saved_model", "main"]

SIGNATURE = "serving_default"


def export_saved_model(model, out_dir: str | os.PathLike, card: dict | None = None, overwrite: bool = False) -> Path:
    """Write ``model`` (a network, a ``.keras`` file or a run folder) as a SavedModel.

    Parameters
    ----------
    model
        Network mapping stamps to logits, or the path of a ``.keras`` file or run folder.
    out_dir
        Destination folder.
    card
        Model card to copy in (default: the card of ``model`` when it is a path).
    overwrite
        Replace an existing ``out_dir``.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    import keras
    import tensorflow as tf

    from realbogus.deploy.card import CARD_NAME, read_card
    from realbogus.io import save_json
    from realbogus.models import load_model

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise DataError(f"{out_dir}: already exists (pass overwrite to replace it)")
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        keras_path = path / "model.keras" if path.is_dir() else path
        if card is None:
            card = read_card(path) if path.exists() else None
        model = load_model(keras_path)
    temperature = None
    if card and card.get("calibration"):
        temperature = float(card["calibration"]["temperature"])

    spec = tf.TensorSpec((None, 29, 29, 3), tf.float32, name="stamps")

    def serve(stamps):
        logits = tf.cast(model(stamps, training=False), tf.float32)
        margin = tf.cast(logits[:, 1] - logits[:, 0], tf.float64)
        out = {"logits": logits, "score": tf.sigmoid(margin)}
        if temperature is not None:
            out["calibrated_score"] = tf.sigmoid(margin / temperature)
        return out

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serve, input_signature=[spec])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        archive.write_out(str(tmp), verbose=False)
        if card:
            save_json(tmp / CARD_NAME, card)
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


@report_errors
def _run(argv=None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m realbogus.deploy.export",
                                     description="Export a trained network as a TensorFlow SavedModel.")
    parser.add_argument("model", help="run folder or .keras file")
    parser.add_argument("out_dir", help="SavedModel folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    args = parser.parse_args(argv)
    model = Path(args.model)
    if not model.exists():
        raise DataError(f"{model}: no such run folder or model file")
    if Path(args.out_dir).exists() and not args.overwrite:
        raise DataError(f"{args.out_dir}: already exists (pass --overwrite to replace it)")
    out = export_saved_model(model, args.out_dir, overwrite=args.overwrite)
    print(f"wrote {out}")
    return out


def main(argv=None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _run(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
