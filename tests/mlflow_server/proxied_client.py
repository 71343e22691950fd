"""An MLflow user's script for a proxied tracking server (mode B), run in its own process.

The test runs it with `artifactd` made unimportable, so it proves that a client without the
plugin logs and downloads through MLflow alone. Usage: proxied_client.py TRACKING_URL SRC OUT;
it logs SRC (a file `weights.bin` and a directory `data`) and a pyfunc model, downloads them
back into OUT, and prints what the test checks as JSON.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import uuid
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd


class Doubler(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context, model_input):  # type: ignore[no-untyped-def]
        return model_input * 2


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def main(url: str, src: Path, out: Path) -> None:
    try:
        importlib.import_module("artifactd")
        plugin_importable = True
    except ImportError:
        plugin_importable = False
    mlflow.set_tracking_uri(url)
    experiment = mlflow.create_experiment(f"proxied-{uuid.uuid4().hex[:8]}")
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifact(str(src / "weights.bin"))
        mlflow.log_artifacts(str(src / "data"), "data")
        model = mlflow.pyfunc.log_model(
            name="model", python_model=Doubler(), pip_requirements=["mlflow"]
        )
    run_id = run.info.run_id
    got = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/", dst_path=str(out)))
    loaded = mlflow.pyfunc.load_model(f"models:/{model.model_id}")
    by_run = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    frame = pd.DataFrame({"x": [1, 2, 3]})
    print(
        json.dumps(
            {
                "plugin_importable": plugin_importable,
                "experiment_id": experiment,
                "run_id": run_id,
                "artifact_uri": run.info.artifact_uri,
                "model_id": model.model_id,
                "model_location": mlflow.get_logged_model(model.model_id).artifact_location,
                "downloaded": digests(got),
                "predictions": [
                    loaded.predict(frame)["x"].tolist(),
                    by_run.predict(frame)["x"].tolist(),
                ],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
