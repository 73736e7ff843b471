"""`vft operator`: the Kopf operator for VoiceFinetune resources.

Cluster-wide unless namespaces are named. Configuration comes from the environment (``OperatorConfig``); the
API connection from the pod's ServiceAccount, else $KUBECONFIG.
"""

from __future__ import annotations

import argparse
import logging


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="vft operator",
        description="Reconcile VoiceFinetune resources into training Jobs and a served voice; keep the inference "
        "Deployment. Configured by VFT_* variables (see the chart's ConfigMap).",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        help="watch this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        default=None,
        help="serve Kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz (default: none)",
    )
    parser.add_argument(
        "--port", type=int, default=None, help="progress receiver and /metrics port (VFT_OPERATOR_PORT)"
    )
    parser.add_argument(
        "--release-finalizers",
        action="store_true",
        help="remove the operator's finalizer from the VoiceFinetunes of the watched namespaces and exit (the "
        "chart's pre-delete hook; after dropping a namespace from the watched ones)",
    )
    parser.add_argument("--verbose", action="store_true", help="log what Kopf does")
    parser.add_argument("--debug", action="store_true", help="log every API call")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import kopf

    from voicefinetune_operator.config import OperatorConfig
    from voicefinetune_operator.handlers import build_registry, has_patterns

    kopf.configure(debug=args.debug, verbose=args.verbose)
    logging.getLogger("voicefinetune").setLevel(logging.DEBUG if args.debug else logging.INFO)
    if not args.debug:
        logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)
    clusterwide = args.all_namespaces or not args.namespaces
    namespaces = () if clusterwide else tuple(args.namespaces)
    if args.release_finalizers:
        return _release(namespaces)
    overrides: dict = {"port": args.port} if args.port is not None else {}
    # Serving several namespaces, the same name can occur twice: ids outside the home namespace get qualified.
    overrides["namespaced_ids"] = clusterwide or len(namespaces) > 1 or has_patterns(namespaces)
    config = OperatorConfig.from_env(**overrides)
    kopf.run(
        registry=build_registry(config, namespaces=namespaces),
        standalone=True,  # no Kopf peering: replicas elect a leader with a Lease (leader.py)
        clusterwide=clusterwide,
        namespaces=namespaces,
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(),
    )
    return 0


def _release(namespaces: tuple[str, ...]) -> int:
    import asyncio

    from voicefinetune.cluster.client import KubeClient
    from voicefinetune_operator.release import release_finalizers

    async def run() -> int:
        kube = await KubeClient.connect()
        try:
            return await release_finalizers(kube, namespaces)
        finally:
            await kube.close()

    released = asyncio.run(run())
    logging.getLogger(__name__).info("released %d VoiceFinetune(s) from the cleanup finalizer", released)
    print(f"released {released} VoiceFinetune(s) from the cleanup finalizer")
    return 0
