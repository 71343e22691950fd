"""One MLflow artifact operation per process, timed from inside (run with MLflow's venv).

    MLFLOW_TRACKING_URI=http://127.0.0.1:PORT python mlflow_ops.py upload --src big.bin \\
        --state S.json
    MLFLOW_TRACKING_URI=... python mlflow_ops.py download --state S.json --dst OUT

An upload creates a new run (untimed, as artifactd has no runs) and times only `log_artifact` /
`log_artifacts`; it leaves the run id and artifact path in the state file for the download, which
times `download_artifacts` including the run lookup and listing it does, since an MLflow user pays
those on every download. Artifacts travel through the server's proxy (`mlflow-artifacts:`).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import mlflow
from benchutil import check_download, emit, tree_stats

EXPERIMENT = "artifactd-bench"
DIR_ARTIFACT = "dir"


def upload(src: str, state: str, directory: bool) -> None:
    files, nbytes = tree_stats(src)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run() as run:
        start = time.perf_counter()
        if directory:
            mlflow.log_artifacts(src, artifact_path=DIR_ARTIFACT)
            artifact = DIR_ARTIFACT
        else:
            mlflow.log_artifact(src)
            artifact = os.path.basename(src)
        seconds = time.perf_counter() - start
    with open(state, "w") as fh:
        json.dump(
            {"run_id": run.info.run_id, "artifact": artifact, "files": files, "bytes": nbytes}, fh
        )
    emit("mlflow_upload_dir" if directory else "mlflow_upload", seconds, nbytes, files)


def download(state: str, dst: str, directory: bool) -> None:
    with open(state) as fh:
        stored = json.load(fh)
    start = time.perf_counter()
    local = mlflow.artifacts.download_artifacts(
        run_id=stored["run_id"], artifact_path=stored["artifact"], dst_path=dst
    )
    seconds = time.perf_counter() - start
    files, nbytes = check_download(local, stored["files"], stored["bytes"])
    emit("mlflow_download_dir" if directory else "mlflow_download", seconds, nbytes, files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("op", choices=["upload", "upload-dir", "download", "download-dir"])
    parser.add_argument("--src", help="local file (upload) or directory (upload-dir)")
    parser.add_argument("--state", required=True, help="JSON handed from upload to download")
    parser.add_argument("--dst", help="local directory to download into")
    args = parser.parse_args()
    if args.op.startswith("upload"):
        upload(args.src, args.state, args.op == "upload-dir")
    else:
        download(args.state, args.dst, args.op == "download-dir")


if __name__ == "__main__":
    main()
