"""The real Prometheus (Debian's) scraping a fresh `vft operator` and a fresh `vft serve`: every Grafana panel and
every alert expression of the chart has data from the start (zeros, not "No data")."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers.chart import CHART, of_kind, render
from tests.helpers.k8s_harness import free_port, wait_for

PROMETHEUS = shutil.which("prometheus")
COMPARISON = re.compile(r"\s*(>|<|>=|<=|==|!=)\s*[0-9.]+\s*$")


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def alert_expressions() -> list[str]:
    """Each alert's expression without its threshold: the series it compares must exist from the start."""
    (rule,) = of_kind(render("--set", "monitoring.prometheusRule.enabled=true"), "PrometheusRule")
    return [COMPARISON.sub("", r["expr"]) for group in rule["spec"]["groups"] for r in group["rules"]]


@pytest.fixture
def prometheus(tmp_path: Path):
    started: list[subprocess.Popen] = []

    def start(targets: dict[str, str]) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [
                        {"job_name": job, "static_configs": [{"targets": [target]}]}
                        for job, target in targets.items()
                    ],
                }
            )
        )
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - owned by the child
        started.append(
            subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.terminate()
        process.wait(15)


def query(url: str, expression: str) -> list[dict]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": expression}, timeout=10)
    assert response.status_code == 200, f"{expression}: {response.text}"
    return response.json()["data"]["result"]


@pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus is installed by scripts/setup.sh")
def test_every_dashboard_and_alert_expression_has_data_on_a_fresh_install(
    start_operator, services, prometheus, settings_env, tmp_path
):
    operator = start_operator()
    serve = services(
        ["serve"], {**settings_env, "VFT_DATA_DIR": str(tmp_path / "serve")}, "serve"
    ).wait_healthy()
    url = prometheus(
        {"operator": operator.url.removeprefix("http://"), "serve": serve.url.removeprefix("http://")}
    )

    def scraped_enough() -> bool:
        try:
            # rate() needs two samples of each target in its window
            counts = query(url, "count_over_time(up[1m])")
            return len(counts) == 2 and all(float(c["value"][1]) >= 3 for c in counts)
        except (httpx.HTTPError, AssertionError):  # Prometheus answers 503 until its storage is ready
            return False

    wait_for(scraped_enough, timeout=90, interval=0.5, what="three scrapes of both targets")
    assert {r["metric"]["job"]: r["value"][1] for r in query(url, "up")} == {"operator": "1", "serve": "1"}
    expressions = dashboard_expressions() + alert_expressions()
    assert len(expressions) >= 13
    empty = [expression for expression in expressions if not query(url, expression)]
    assert not empty, f"no data for: {empty}"
