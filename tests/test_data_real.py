"""The rendered data-service configuration, run by the real servers.

The cluster runs Postgres 18 and Valkey 9; here the Debian packages give
Postgres 15 and Redis 7, which read the same settings and config syntax, so a
typo or an invalid value in what we render fails here first.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.support import services
from tests.support.manifests import one

CI = bool(os.environ.get("CI"))


def container(objects: list[dict], kind: str, name: str, container_name: str) -> dict:
    spec = one(objects, kind, name)["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == container_name)


def rendered_postgres_settings(objects: list[dict]) -> dict[str, str]:
    clusters = [o for o in objects if o["kind"] == "Cluster"]
    if clusters:  # CloudNativePG: postgresql.parameters of the Cluster
        (cluster,) = clusters
        return dict(cluster["spec"]["postgresql"]["parameters"])
    args = container(objects, "StatefulSet", "postgres", "postgres")["args"]
    assert args[::2] == ["-c"] * (len(args) // 2), f"unexpected postgres args: {args}"
    return dict(arg.split("=", 1) for arg in args[1::2])


@pytest.mark.parametrize("env", ["dev", "stage", "prod"])
def test_postgres_accepts_the_rendered_settings(manifests, env):
    try:
        server_cm = services.postgres_server()
        server = server_cm.__enter__()
    except services.MissingBinaryError as err:
        if CI:
            raise
        pytest.skip(str(err))
    try:
        settings = rendered_postgres_settings(manifests[env])
        server.stop()
        conf = server.data_dir / "postgresql.conf"
        with conf.open("a") as handle:
            handle.write("\n# rendered by charts/data.py\n")
            for key, value in settings.items():
                handle.write(f"{key} = '{value}'\n")
        server.start()  # fails on an unknown setting or an invalid value
        for key, value in settings.items():
            shown = server.psql(f"SHOW {key}")
            # psql output is stripped, so compare without trailing blanks.
            assert shown == value.strip() or _same_size(shown, value), f"{env}: {key} is {shown}, rendered {value}"
    finally:
        server_cm.__exit__(None, None, None)


def _same_size(shown: str, rendered: str) -> bool:
    # Postgres prints sizes in its own unit (e.g. 16MB for wal_buffers=-1 is auto).
    return rendered == "-1" or shown.replace(" ", "") == rendered


def test_redis_runs_the_rendered_config_and_command(manifests, tmp_path):
    redis_server, redis_cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not (redis_server and redis_cli):
        if CI:
            pytest.fail("redis-server not installed (scripts/setup.sh installs it)")
        pytest.skip("redis-server not installed")
    objects = manifests["prod"]
    conf = one(objects, "ConfigMap", "redis-config")["data"]["valkey.conf"]
    redis = container(objects, "StatefulSet", "redis", "redis")
    port = services.free_port()
    data = tmp_path / "data"
    data.mkdir()
    etc = tmp_path / "etc"
    etc.mkdir()
    # Only what differs between a pod and this machine: paths, port, binary names.
    (etc / "valkey.conf").write_text(conf.replace("dir /data", f"dir {data}")
                                     .replace("port 6379", f"port {port}").replace("bind 0.0.0.0", "bind 127.0.0.1"))
    script = (redis["command"][2].replace("/etc/valkey/valkey.conf", str(etc / "valkey.conf"))
              .replace("/tmp/valkey.conf", str(tmp_path / "valkey.conf"))
              .replace("valkey-server", redis_server))
    password = "Rendered0Config0Test"
    process = subprocess.Popen(["sh", "-c", script], env={**os.environ, "REDIS_PASSWORD": password},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        services.wait_for_port(port, process=process)

        def cli(*args: str, auth: bool = True) -> str:
            env = {**os.environ, **({"REDISCLI_AUTH": password} if auth else {})}
            return subprocess.run([redis_cli, "-p", str(port), *args], env=env, capture_output=True, text=True,
                                  timeout=10, check=False).stdout.strip()

        assert "NOAUTH" in cli("ping", auth=False), "the server answers without the password"
        assert cli("ping") == "PONG"
        assert cli("config", "get", "maxmemory-policy").splitlines()[-1] == "noeviction"
        assert cli("config", "get", "appendonly").splitlines()[-1] == "yes"
        assert cli("config", "get", "appendfsync").splitlines()[-1] == "everysec"
        assert int(cli("config", "get", "maxmemory").splitlines()[-1]) == 512 * 2**20 * 70 // 100
        # The rendered readiness probe, against this server.
        probe = " ".join(redis["readinessProbe"]["exec"]["command"][2:])
        probe = probe.replace("valkey-cli -h 127.0.0.1", f"{redis_cli} -h 127.0.0.1 -p {port}")
        result = subprocess.run(["sh", "-c", probe], env={**os.environ, "REDIS_PASSWORD": password},
                                capture_output=True, timeout=10, check=False)
        assert result.returncode == 0, "the readiness probe fails against a healthy server"
        wrong = subprocess.run(["sh", "-c", probe], env={**os.environ, "REDIS_PASSWORD": "wrong"},
                               capture_output=True, timeout=10, check=False)
        assert wrong.returncode != 0, "the readiness probe passes with a wrong password"
        # sh execs the server, so this pid is redis-server: its command line
        # (visible to anyone who can list processes) must not hold the password.
        args = subprocess.run(["ps", "-o", "args=", "-p", str(process.pid)], capture_output=True, text=True,
                              check=True).stdout
        assert redis_server in args and password not in args, args
    finally:
        services.terminate(process)
