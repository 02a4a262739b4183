"""The everyday commands as users run them: the installed `edgeflow` console script of this venv, in its own
process, against apps running as their own processes (`python main.py`) on a real redis-server.

`edgeflow status` and `edgeflow logs` read what every replica reports on the control plane; the Kubernetes forms of
the same commands (edgeflow-k8s) are tested against the API emulation in tests/k8s/test_cli.py, and only their
routing here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeflow.embedded import EmbeddedRedis

EDGEFLOW = str(Path(sys.executable).with_name("edgeflow"))
APP = """
import time
from edgeflow import EdgeApp
from edgeflow.nodes import ConsumerNode, ProducerNode

app = EdgeApp("everyday")


@app.node(name="counter", type="producer", fps=50)
class Counter(ProducerNode):
    def configure(self):
        self.n = 0

    def produce(self):
        self.n += 1
        return {"n": self.n}


@app.node(name="worker", type="consumer", replicas=2)
class Worker(ConsumerNode):
    def process(self, data):
        if data["n"] % 25 == 0:
            raise ValueError(f"n={data['n']} is a multiple of 25")
        if data["n"] % 10 == 0:
            self.logger.info("worked on n=%d", data["n"])
        return data


if __name__ == "__main__":
    app.link("counter").to("worker")
    app.run()
"""


def _env(redis_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGEFLOW_DISABLE_PLUGIN_AUTOLOAD"}
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


def _cli(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EDGEFLOW, *args], capture_output=True, text=True, env=env, timeout=90, cwd=cwd)


@pytest.fixture
def running(tmp_path: Path, redis_server: EmbeddedRedis) -> Iterator[tuple[Path, dict[str, str]]]:
    """The app above, running as `python main.py` (every node in one process) until the test ends."""
    main = tmp_path / "main.py"
    main.write_text(textwrap.dedent(APP))
    # A name of its own on the shared session Redis: another test's app never answers for this one.
    main.write_text(main.read_text().replace('EdgeApp("everyday")', f'EdgeApp("everyday-{tmp_path.name[-20:]}")'))
    env = _env(redis_server.url)
    with subprocess.Popen([sys.executable, str(main)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                done = _cli(["status", str(main), "--json", "--seconds", "1.2"], env)
                nodes = json.loads(done.stdout)["nodes"] if done.returncode == 0 else []
                if [n["failed"] for n in nodes if n["name"] == "worker"] not in ([], [0]):
                    break  # up, and the first failure (n=25) is in
                assert proc.poll() is None and time.monotonic() < deadline, done.stderr
            yield main, env
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            assert proc.returncode == 0, proc.stdout.read() if proc.stdout else ""


@pytest.mark.slow
def test_status_shows_nodes_replicas_rates_and_the_last_error(running: tuple[Path, dict[str, str]]) -> None:
    """The table: each node up with its replicas, rates and counters, the worker's last error; --json the same."""
    main, env = running
    done = _cli(["status", str(main)], env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.match(r"app everyday-\S+  broker redis://127\.0\.0\.1:\d+/0  2 of 2 nodes up$", lines[0]), lines[0]
    assert lines[1].split() == ["NODE", "TYPE", "STATUS", "REPLICAS", "IN/S", "OUT/S", "DROPPED", "FAILED", "P50",
                                "MS", "LAST", "ERROR"]  # fmt: skip
    counter = next(line for line in lines if line.startswith("counter "))
    worker = next(line for line in lines if line.startswith("worker "))
    assert counter.split()[1:4] == ["producer", "up", "1/1"]
    assert worker.split()[1:4] == ["consumer", "up", "2/2"]
    assert "process() raised on frame" in worker and "is a multiple of 25" in worker
    assert float(counter.split()[5]) > 20, "the producer's rate out, about 50/s"
    assert len([line for line in lines if re.match(r"^\s+replica [01] on \S+: running, in ", line)]) == 3

    as_json = json.loads(_cli(["status", str(main), "--json"], env).stdout)
    worker_json = next(n for n in as_json["nodes"] if n["name"] == "worker")
    assert worker_json["status"] == "up" and worker_json["replicas_alive"] == 2 and worker_json["failed"] >= 1
    assert sorted(r["replica"] for r in as_json["replicas"] if r["node"] == "worker") == [0, 1]
    assert all("log" not in r for r in as_json["replicas"])


@pytest.mark.slow
def test_logs_prints_the_replicas_last_lines_once_each(running: tuple[Path, dict[str, str]]) -> None:
    """The worker's last lines, both replicas' merged in time order, each marked with its replica; -f follows."""
    main, env = running
    time.sleep(1.5)  # some INFO lines on top of the first error
    done = _cli(["logs", str(main), "worker", "--tail", "4"], env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4, lines
    pattern = (
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (INFO|ERROR) +\[worker\.[01] \S+\] (worked on n=\d+|node 'worker')"
    )
    assert all(re.match(pattern, line) for line in lines), lines
    assert lines == sorted(lines), "oldest first"

    with subprocess.Popen([EDGEFLOW, "logs", str(main), "worker", "-f", "--tail", "0"], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as follow:  # fmt: skip
        assert follow.stdout is not None
        got: list[str] = []
        deadline = time.monotonic() + 20
        while len(got) < 6 and time.monotonic() < deadline:
            got.append(follow.stdout.readline().rstrip("\n"))
        follow.send_signal(signal.SIGINT)
        follow.communicate(timeout=15)
    assert follow.returncode == 0
    worked = [int(m.group(1)) for line in got if (m := re.search(r"worked on n=(\d+)", line))]
    assert len(worked) >= 4 and len(set(worked)) == len(worked), f"each line once: {got}"
    assert worked[-1] > max(int(n) for n in re.findall(r"n=(\d+)", done.stdout) or ["0"]), "new lines, not the old"


def test_status_and_logs_say_when_nothing_runs(tmp_path: Path, redis_server: EmbeddedRedis) -> None:
    """An app that isn't running: status exits 1 and says what to check; logs the same; a wrong node is a usage
    error listing the nodes."""
    main = tmp_path / "main.py"
    main.write_text(textwrap.dedent(APP).replace('EdgeApp("everyday")', 'EdgeApp("not-running")'))
    env = _env(redis_server.url)
    status = _cli(["status", str(main), "--seconds", "1"], env)
    assert status.returncode == 1
    assert "no node of app 'not-running' reported on redis://127.0.0.1:" in status.stderr
    assert re.search(r"^counter +producer +unknown +0/1 ", status.stdout, re.M), status.stdout
    logs = _cli(["logs", str(main), "worker", "--seconds", "1"], env)
    assert logs.returncode == 1 and "no replica of 'worker' reported" in logs.stderr
    wrong = _cli(["logs", str(main), "wroker"], env)
    assert wrong.returncode == 2 and "no node 'wroker' in app 'not-running'; its nodes: counter, worker" in wrong.stderr


def test_local_or_deployed_is_chosen_from_the_options(tmp_path: Path) -> None:
    """An option only the Kubernetes command knows (-n) asks the cluster; --local and --target choose outright."""
    main = tmp_path / "main.py"
    main.write_text(textwrap.dedent(APP))
    env = _env("redis://127.0.0.1:1/0", KUBECONFIG=str(tmp_path / "no-kubeconfig"))
    deployed = _cli(["status", "-n", "demo"], env)
    assert deployed.returncode == 2 and f"no kubeconfig at {tmp_path / 'no-kubeconfig'}" in deployed.stderr
    deployed_logs = _cli(["logs", "worker", "--namespace=demo"], env)
    assert deployed_logs.returncode == 2 and "no kubeconfig at" in deployed_logs.stderr
    local = _cli(["status", str(main), "--seconds", "0.5"], env)
    assert local.returncode == 2 and "redis://127.0.0.1:1/0" in local.stderr, local.stderr  # the local view tried Redis
    forced = _cli(["status", "--local", "-n", "demo", str(main)], env)
    assert forced.returncode == 2 and "No such option '-n'" in forced.stderr
    unknown = _cli(["status", "--target", "nomad", str(main)], env)
    assert unknown.returncode == 2 and "no deployer named 'nomad' is installed (installed deployers: kubernetes)" in (
        unknown.stderr
    )


def _commands(env: dict[str, str]) -> list[list[str]]:
    top = _cli(["--help"], env).stdout
    names = re.findall(r"^  ([a-z][a-z-]+)\s", top.split("Commands:")[1], re.M)
    out = [[n] for n in names]
    out += [["topic", sub] for sub in ("list", "hz", "echo")]
    out += [[n, "--target", "kubernetes"] for n in ("status", "logs", "deploy")]
    return out


@pytest.mark.slow
def test_every_commands_help_has_an_example() -> None:
    """`edgeflow CMD --help` (and -h) shows an example for every command, the deployed forms included."""
    env = _env()
    commands = _commands(env)
    assert {"init", "status", "logs", "deploy", "delete", "trace", "topic", "record", "replay"} <= {
        c[0] for c in commands
    }
    assert "Example" in _cli(["--help"], env).stdout
    for cmd in commands:
        for flag in ("--help", "-h"):
            done = _cli([*cmd, flag], env)
            assert done.returncode == 0, (cmd, done.stderr)
            assert re.search(r"^\s*Examples?:", done.stdout, re.M), f"`edgeflow {' '.join(cmd)} {flag}` has no example"


@pytest.mark.slow
def test_init_makes_a_project_whose_own_test_passes(tmp_path: Path, redis_server: EmbeddedRedis) -> None:
    """`edgeflow init robot`: main.py, requirements.txt, README.md and tests/test_app.py; pytest passes there, and
    a second init into the same folder is refused without touching it."""
    done = _cli(["init", "robot"], _env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    project = tmp_path / "robot"
    files = sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())
    assert files == ["README.md", "main.py", "requirements.txt", "tests/test_app.py"]
    assert "edgeflow[web]~=0.1" in (project / "requirements.txt").read_text()
    main = (project / "main.py").read_text()
    assert 'EdgeApp("robot")' in main and "WebInterface(port=settings.GATEWAY_HTTP_PORT)" in main
    assert 'type="producer"' in main and 'type="consumer"' in main and 'type="gateway"' in main

    listed = subprocess.run([sys.executable, "main.py", "--list"], cwd=project, capture_output=True, text=True,
                            env=_env(), timeout=60)  # fmt: skip
    assert listed.returncode == 0 and "camera -> brightness" in listed.stdout, listed.stderr
    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project,
                            capture_output=True, text=True, env=_env(redis_server.url), timeout=120)  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "2 passed" in tested.stdout

    before = (project / "main.py").read_text()
    again = _cli(["init", "robot"], _env(), cwd=tmp_path)
    assert (
        again.returncode == 2 and "already has main.py, requirements.txt, README.md, tests/test_app.py" in again.stderr
    )
    assert (project / "main.py").read_text() == before
    bad = _cli(["init", "My_Robot"], _env(), cwd=tmp_path)
    assert bad.returncode == 2 and "'My_Robot' can't name a project" in bad.stderr
