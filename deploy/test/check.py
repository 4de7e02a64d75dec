#!/usr/bin/python3
"""Checks of deploy/ that need no server, no Docker daemon and no systemd; run by
deploy/test/run.sh (with Debian's python3-yaml; tomllib is in Python 3.11).

  check.py dashboard DASHBOARD METRICS  every metric a panel queries is in METRICS (the
                                        text of a running server's /metrics)
  check.py kubernetes DIR               the manifests parse and have what issue 18 names:
                                        hostNetwork, one server per labelled node, grace
                                        period = the ConfigMap's drain_timeout + 60 s,
                                        /healthz and /readyz probes, the config as a
                                        ConfigMap and the secret as a Secret, non-root
  check.py compose CONFIG_OUTPUT        `docker-compose config`'s output: host networking,
                                        the stop grace, Prometheus and Grafana wired
  check.py dockerfile DOCKERFILE        two stages, a non-root user, the default ports
                                        exposed, a HEALTHCHECK of /healthz
  check.py selftest                     each check above fails on a broken copy
  check.py ws-error URL                 makes the server send one signaling error (a join
                                        with a bad token), so that its counter exists

Each check raises `Failed` naming what is wrong; the drain rule (grace = drain_timeout +
60 s) is also what deploy/systemd/sfu.service and deploy/compose.yaml use.
"""

import base64
import copy
import json
import os
import re
import socket
import sys
import tomllib

import yaml

DRAIN_MARGIN_S = 60
DEPLOY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


class Failed(Exception):
    pass


def expect(condition, what):
    if not condition:
        raise Failed(what)


# --- The dashboard ------------------------------------------------------------------

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset",
                "bool", "and", "or", "unless", "inf", "nan"}


def queried_metrics(expr):
    """The metric names a PromQL expression reads: identifiers outside label matchers,
    ranges, strings and grouping clauses that are not followed by `(` (a function)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", e):
        if m.group(2) is None and m.group(1).lower() not in PROMQL_WORDS:
            names.add(m.group(1))
    return names


def exported(metrics_text):
    """(sample names, {family: type}) of a Prometheus text exposition."""
    samples, types = set(), {}
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind.strip()
        elif line and not line.startswith("#"):
            samples.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return samples, types


def metric_exists(name, samples, types):
    """A histogram's or summary's series are named after its family with a suffix: a
    `_bucket` name must be a histogram's, `_sum`/`_count` a histogram's or summary's."""
    for suffix, kinds in (("_bucket", {"histogram"}), ("_sum", {"histogram", "summary"}),
                          ("_count", {"histogram", "summary"})):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) in kinds:
            return True
    return name in samples and types.get(name) not in {"histogram", "summary"}


def panels(dashboard):
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])


def check_dashboard(dashboard, metrics_text, min_queried=10):
    samples, types = exported(metrics_text)
    queried = {}
    for p in panels(dashboard):
        for t in p.get("targets", []):
            for name in queried_metrics(t["expr"]):
                queried.setdefault(name, p["title"])
    for v in dashboard.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else q or ""
        for m in re.finditer(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,", q):
            queried.setdefault(m.group(1), "variable $" + v["name"])
    expect(len(queried) >= min_queried, f"the dashboard queries only {sorted(queried)}")
    missing = sorted(f"{n} (panel {t!r})" for n, t in queried.items()
                     if not metric_exists(n, samples, types))
    expect(not missing, "queried but not in /metrics: " + ", ".join(missing))
    return sorted(queried)


# --- Kubernetes ---------------------------------------------------------------------

def load_kubernetes(directory):
    docs = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(directory, name)) as f:
                docs[name] = [d for d in yaml.safe_load_all(f) if d is not None]
    return docs


def of_kind(docs, kind):
    return [d for ds in docs.values() for d in ds if d.get("kind") == kind]


def check_kubernetes(docs):
    [kustomization] = of_kind(docs, "Kustomization")
    listed = set(kustomization.get("resources", []))
    expect(listed == set(docs) - {"kustomization.yaml"},
           f"kustomization resources {sorted(listed)} are not the directory's manifests")
    [ds] = of_kind(docs, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    expect(spec.get("hostNetwork") is True, "the DaemonSet has no hostNetwork: true")
    expect(spec.get("dnsPolicy") == "ClusterFirstWithHostNet",
           "hostNetwork without dnsPolicy ClusterFirstWithHostNet")
    expect(spec.get("nodeSelector"), "no nodeSelector picks the media nodes")
    [c] = spec["containers"]
    expect(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness is not /healthz")
    expect(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness is not /readyz")
    # The config: a ConfigMap whose TOML the container reads, with the drain timeout.
    [cm] = of_kind(docs, "ConfigMap")
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    cm_vols = [n for n, v in vols.items()
               if v.get("configMap", {}).get("name") == cm["metadata"]["name"]]
    expect(cm_vols, "the ConfigMap is not mounted")
    key = "sfu.toml"
    config = tomllib.loads(cm["data"][key])
    config_path = os.path.join(mounts[cm_vols[0]], key)
    expect(config_path in c.get("args", []), f"the server is not given --config {config_path}")
    example = open(os.path.join(DEPLOY, "sfu.example.toml")).read()
    unknown = [k for k in config if not re.search(rf"^#? ?{k} =", example, re.M)]
    expect(not unknown, f"keys the server does not know: {unknown}")
    drain = config.get("drain_timeout", 3600)
    grace = spec.get("terminationGracePeriodSeconds")
    expect(grace == drain + DRAIN_MARGIN_S,
           f"terminationGracePeriodSeconds {grace} is not drain_timeout {drain} + "
           f"{DRAIN_MARGIN_S}")
    # The secret: a Secret (generated from a file) mounted where secret_file points.
    secrets = [g["name"] for g in kustomization.get("secretGenerator", [])]
    secrets += [s["metadata"]["name"] for s in of_kind(docs, "Secret")]
    secret_vols = [n for n, v in vols.items()
                   if v.get("secret", {}).get("secretName") in secrets]
    expect(secret_vols, "no Secret is mounted")
    expect(os.path.dirname(config["secret_file"]) == mounts[secret_vols[0]],
           f"secret_file {config['secret_file']} is not in the Secret's mount")
    expect("secret" not in config, "the secret is written in the ConfigMap")
    # Who it runs as.
    pod_sc, sc = spec.get("securityContext", {}), c.get("securityContext", {})
    expect(sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, "not runAsNonRoot")
    expect(sc.get("readOnlyRootFilesystem") is True, "the root filesystem is writable")
    expect(sc.get("allowPrivilegeEscalation") is False, "privilege escalation allowed")
    expect(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities not all dropped")
    # The Service carries signaling only.
    [svc] = of_kind(docs, "Service")
    ports = [(p["port"], p.get("protocol", "TCP")) for p in svc["spec"]["ports"]]
    http = urlport(config["http_listen"])
    expect(ports == [(http, "TCP")], f"the Service has ports {ports}, not signaling's only")


def urlport(listen):
    return int(listen.rsplit(":", 1)[1])


# --- Compose and the Dockerfile -----------------------------------------------------

def check_compose(config):
    services = config["services"]
    sfu = services["sfu"]
    expect(sfu.get("network_mode") == "host", "the server is not on the host's network")
    expect("ports" not in sfu, "host networking publishes no ports")
    grace = sfu.get("stop_grace_period", "10s")
    expect(grace == f"{3600 + DRAIN_MARGIN_S}s", f"stop_grace_period {grace} cuts the drain")
    expect(sfu.get("read_only") is True, "the server's filesystem is writable")
    expect("ALL" in sfu.get("cap_drop", []), "capabilities are not dropped")
    env = sfu.get("environment", {})
    expect(env.get("SFU_SECRET_FILE", "").startswith("/run/secrets/"),
           "the secret does not come as a file")
    mounted = " ".join(str(v) for s in services.values() for v in s.get("volumes", []))
    for path in ("prometheus/prometheus.yml", "grafana/provisioning", "grafana/dashboards"):
        expect(path in mounted, f"{path} is not mounted")


def check_dockerfile(text):
    lines = re.sub(r"\\\n", " ", text).splitlines()
    froms = [l.split()[1] for l in lines if l.startswith("FROM ")]
    expect(len(froms) == 2 and froms[0].startswith("rust:"), f"stages {froms}")
    expect(froms[1] == "debian:bookworm-slim", f"runtime {froms[1]}")
    users = [l.split()[1] for l in lines if l.startswith("USER ")]
    expect(users and not users[-1].startswith(("root", "0")), "runs as root")
    exposed = set(w for l in lines if l.startswith("EXPOSE ") for w in l.split()[1:])
    for port in ("8080/tcp", "16384-16584/udp", "16384/tcp", "3478/udp", "3478/tcp"):
        expect(port in exposed, f"EXPOSE lacks {port}")
    health = [l for l in lines if l.startswith("HEALTHCHECK ")]
    expect(health and "/healthz" in health[0], "no HEALTHCHECK of /healthz")
    expect(any("cargo build --release" in l and "-p sfu" in l for l in lines), "no build")


def healthcheck_script(text):
    """The bash script the HEALTHCHECK runs, so that run.sh can run it."""
    joined = re.sub(r"\\\n", " ", text)
    m = re.search(r"^HEALTHCHECK .*? CMD (\[.*\])\s*$", joined, re.M)
    expect(m, "no HEALTHCHECK in exec form")
    argv = json.loads(m.group(1))
    expect(argv[:2] == ["bash", "-c"], f"HEALTHCHECK {argv}")
    return argv[2]


# --- Self-test: every check fails on a broken copy ------------------------------------

def selftest():
    def must_fail(what, check, *args):
        try:
            check(*args)
        except (Failed, KeyError, ValueError):
            print(f"  fails as it should: {what}")
            return
        raise Failed(f"the check passed a broken copy: {what}")

    metrics = "# TYPE sfu_rooms gauge\nsfu_rooms{shard=\"0\"} 0\n# TYPE h histogram\n" \
              "h_bucket{le=\"1\"} 0\nh_sum 0\nh_count 0\n"
    dash = {"panels": [{"title": "t", "targets": [
        {"expr": f'sum(rate({n}{{a="b"}}[5m])) by (x)'} for n in
        ["sfu_rooms", "h_bucket", "h_count"]]}]}
    check_dashboard(dash, metrics, 3)
    broken = copy.deepcopy(dash)
    broken["panels"][0]["targets"].append({"expr": "sum(sfu_no_such_metric)"})
    must_fail("a dashboard metric not in /metrics", check_dashboard, broken, metrics, 3)
    broken = copy.deepcopy(dash)
    broken["panels"][0]["targets"].append({"expr": "sfu_rooms_count"})
    must_fail("a _count of a gauge", check_dashboard, broken, metrics, 3)
    broken = copy.deepcopy(dash)
    broken["panels"][0]["targets"].append({"expr": "h"})
    must_fail("a histogram by its bare name", check_dashboard, broken, metrics, 3)

    docs = load_kubernetes(os.path.join(DEPLOY, "kubernetes"))
    check_kubernetes(docs)

    def spec(d):
        return of_kind(d, "DaemonSet")[0]["spec"]["template"]["spec"]

    def container(d):
        return spec(d)["containers"][0]

    def cm(d):
        return of_kind(d, "ConfigMap")[0]["data"]

    breakages = {
        "no hostNetwork": lambda d: spec(d).pop("hostNetwork"),
        "grace period shorter than the drain": lambda d: spec(d).update(
            terminationGracePeriodSeconds=30),
        "drain timeout raised alone": lambda d: cm(d).update(
            {"sfu.toml": cm(d)["sfu.toml"].replace("drain_timeout = 3600",
                                                   "drain_timeout = 7200")}),
        "a key the server does not know": lambda d: cm(d).update(
            {"sfu.toml": cm(d)["sfu.toml"] + "no_such_key = 1\n"}),
        "liveness on /readyz": lambda d: container(d)["livenessProbe"]["httpGet"].update(
            path="/readyz"),
        "no readiness probe": lambda d: container(d).pop("readinessProbe"),
        "run as root": lambda d: spec(d)["securityContext"].update(runAsNonRoot=False),
        "writable root": lambda d: container(d)["securityContext"].update(
            readOnlyRootFilesystem=False),
        "capabilities kept": lambda d: container(d)["securityContext"].pop("capabilities"),
        "no Secret": lambda d: of_kind(d, "Kustomization")[0].pop("secretGenerator"),
        "media ports in the Service": lambda d: of_kind(d, "Service")[0]["spec"][
            "ports"].append({"port": 16384, "protocol": "UDP"}),
    }
    for what, breakage in breakages.items():
        broken = copy.deepcopy(docs)
        breakage(broken)
        must_fail(what, check_kubernetes, broken)

    dockerfile = open(os.path.join(DEPLOY, "Dockerfile")).read()
    check_dockerfile(dockerfile)
    must_fail("a Dockerfile running as root", check_dockerfile,
              dockerfile + "USER root\n")
    must_fail("a Dockerfile without the UDP range", check_dockerfile,
              dockerfile.replace("16384-16584/udp", ""))
    compose = yaml.safe_load(open(os.path.join(DEPLOY, "compose.yaml")))
    compose["services"]["sfu"].pop("network_mode")
    must_fail("compose without host networking", check_compose, compose)


# --- A signaling error, through a minimal WebSocket client --------------------------

def ws_error(url):
    """Joins with a bad token over /ws and returns the server's answer (an error)."""
    m = re.match(r"ws://([^:/]+):(\d+)(/.*)", url)
    host, port, path = m.group(1), int(m.group(2)), m.group(3)
    s = socket.create_connection((host, port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    expect(b" 101 " in head.split(b"\r\n")[0], f"no WebSocket upgrade: {head[:80]!r}")
    rest = head.split(b"\r\n\r\n", 1)[1]
    payload = json.dumps({"type": "join", "token": "not-a-token"}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    data = rest
    while len(data) < 2 or len(data) < 2 + (data[1] & 0x7F):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    expect(len(data) >= 2 and data[1] < 126, f"unexpected frame {data[:40]!r}")
    answer = json.loads(data[2:2 + data[1]])
    expect(answer.get("type") == "error", f"a bad token was answered {answer}")
    return answer


def main(argv):
    try:
        match argv:
            case ["dashboard", dashboard, metrics]:
                names = check_dashboard(json.load(open(dashboard)), open(metrics).read())
                print(f"dashboard: all {len(names)} queried metrics exported: "
                      + " ".join(names))
            case ["kubernetes", directory]:
                check_kubernetes(load_kubernetes(directory))
                print("kubernetes: the manifests have what issue 18 names")
            case ["compose", output]:
                check_compose(yaml.safe_load(open(output)))
                print("compose: host networking, drain grace, Prometheus and Grafana wired")
            case ["dockerfile", path]:
                check_dockerfile(open(path).read())
                print("dockerfile: two stages, non-root, ports exposed, HEALTHCHECK")
            case ["healthcheck-script", path]:
                print(healthcheck_script(open(path).read()))
            case ["selftest"]:
                selftest()
            case ["ws-error", url]:
                print(f"signaling answered a bad token with {ws_error(url)}")
            case _:
                print(__doc__, file=sys.stderr)
                return 2
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
