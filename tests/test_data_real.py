"""The rendered data-service configuration, run by the real servers.

The cluster runs Postgres 18 and Valkey 9. Each test runs twice: on this
machine's Postgres 15 and Redis 7, and on the rendered images' own majors,
PostgreSQL 18 and Valkey 9 from the Debian testing root of
scripts/runtime-roots.sh (skipped with one line where roots cannot be built).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.support import services
from tests.support.manifests import one
from tests.support.roots import require_roots, root_runtime

CI = bool(os.environ.get("CI"))


@pytest.fixture(params=["host", pytest.param("forky", marks=pytest.mark.runtime)])
def runtime(request) -> services.Runtime:
    """This machine, or the root with the images' server majors."""
    if request.param == "host":
        return services.HOST
    require_roots()
    return root_runtime(request.param)


def image_major(objects: list[dict], kind: str, name: str, container_name: str) -> int:
    """The major version in the rendered image tag (postgres:18.6-trixie[@sha256:...] -> 18)."""
    tag = container(objects, kind, name, container_name)["image"].split("@")[0].rsplit(":", 1)[1]
    match = re.match(r"v?(\d+)\.", tag)
    assert match, f"no version in image tag {tag}"
    return int(match.group(1))


def postgres_major(objects: list[dict]) -> int:
    """The Postgres major the env deploys: the StatefulSet's image or the CNPG Cluster's imageName."""
    clusters = [o for o in objects if o["kind"] == "Cluster"]
    if not clusters:
        return image_major(objects, "StatefulSet", "postgres", "postgres")
    tag = clusters[0]["spec"]["imageName"].split("@")[0].rsplit(":", 1)[1]
    match = re.match(r"(\d+)\.", tag)
    assert match, f"no version in image tag {tag}"
    return int(match.group(1))


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
def test_postgres_accepts_the_rendered_settings(manifests, env, runtime):
    try:
        server_cm = services.postgres_server(runtime=runtime)
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
        if runtime is not services.HOST:
            # The root must run the major the chart deploys, or this proves nothing.
            major = int(server.psql("SHOW server_version_num")) // 10000
            assert major == postgres_major(manifests[env])
        for key, value in settings.items():
            shown = server.psql(f"SHOW {key}")
            # psql output is stripped, so compare without trailing blanks.
            assert shown == value.strip() or _same_size(shown, value), f"{env}: {key} is {shown}, rendered {value}"
    finally:
        server_cm.__exit__(None, None, None)


def _same_size(shown: str, rendered: str) -> bool:
    # Postgres prints sizes in its own unit (e.g. 16MB for wal_buffers=-1 is auto).
    return rendered == "-1" or shown.replace(" ", "") == rendered


def test_redis_runs_the_rendered_config_and_command(manifests, tmp_path, runtime):
    if runtime is services.HOST:
        redis_server, redis_cli = shutil.which("redis-server"), shutil.which("redis-cli")
    else:  # the image's own binary names, unreplaced
        redis_server, redis_cli = runtime.which("valkey-server"), runtime.which("valkey-cli")
    if not (redis_server and redis_cli):
        if CI:
            pytest.fail(f"redis-server not installed in {runtime.name} (scripts/setup.sh installs it)")
        pytest.skip(f"redis-server not installed in {runtime.name}")
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
    process = subprocess.Popen(runtime.command(["sh", "-c", script]), env={**os.environ, "REDIS_PASSWORD": password},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        services.wait_for_port(port, process=process)

        def cli(*args: str, auth: bool = True) -> str:
            env = {**os.environ, **({"REDISCLI_AUTH": password} if auth else {})}
            return subprocess.run(runtime.command([redis_cli, "-p", str(port), *args]), env=env, capture_output=True,
                                  text=True, timeout=10, check=False).stdout.strip()

        if runtime is not services.HOST:
            version = cli("info", "server")
            # Valkey also reports redis_version (7.2.4, for clients): read its own.
            major = re.search(r"^valkey_version:(\d+)\.", version, re.MULTILINE)
            assert major and int(major.group(1)) == image_major(objects, "StatefulSet", "redis", "redis"), version

        assert "NOAUTH" in cli("ping", auth=False), "the server answers without the password"
        assert cli("ping") == "PONG"
        assert cli("config", "get", "maxmemory-policy").splitlines()[-1] == "noeviction"
        assert cli("config", "get", "appendonly").splitlines()[-1] == "yes"
        assert cli("config", "get", "appendfsync").splitlines()[-1] == "everysec"
        assert int(cli("config", "get", "maxmemory").splitlines()[-1]) == 512 * 2**20 * 70 // 100
        # The rendered readiness probe, against this server.
        probe = " ".join(redis["readinessProbe"]["exec"]["command"][2:])
        probe = probe.replace("valkey-cli -h 127.0.0.1", f"{redis_cli} -h 127.0.0.1 -p {port}")
        result = subprocess.run(runtime.command(["sh", "-c", probe]), env={**os.environ, "REDIS_PASSWORD": password},
                                capture_output=True, timeout=10, check=False)
        assert result.returncode == 0, "the readiness probe fails against a healthy server"
        wrong = subprocess.run(runtime.command(["sh", "-c", probe]), env={**os.environ, "REDIS_PASSWORD": "wrong"},
                               capture_output=True, timeout=10, check=False)
        assert wrong.returncode != 0, "the readiness probe passes with a wrong password"
        # sh execs the server, so this pid is redis-server: its command line
        # (visible to anyone who can list processes) must not hold the password.
        args = subprocess.run(["ps", "-o", "args=", "-p", str(process.pid)], capture_output=True, text=True,
                              check=True).stdout
        assert redis_server in args and password not in args, args
    finally:
        services.terminate(process)
