#!/usr/bin/python3
"""Checks of deploy/ that need no server, no Docker daemon and no systemd; run by
deploy/test/run.sh (with Debian's python3-yaml; tomllib is in Python 3.11).

  check.py dashboard DASHBOARD METRICS  every metric a panel queries is in METRICS (the
                                        text of a running server's /metrics)
  check.py kubernetes DIR HELP          the manifests parse and have what issue 18 names:
                                        hostNetwork, one server per labelled node, grace
                                        period = the ConfigMap's drain_timeout + 60 s,
                                        /healthz and /readyz probes, the config as a
                                        ConfigMap and the secret as a Secret, non-root;
                                        and the cluster: each server a node named after
                                        its Kubernetes node, with a public URL of its own,
                                        on the one Redis of redis.yaml (pinned, not
                                        persisted, behind the generated password)
  check.py compose CONFIG_OUTPUT HELP   `docker-compose config`'s output: host networking,
                                        the stop grace, Prometheus and Grafana wired
  check.py compose-cluster CONFIG_OUTPUT HELP
                                        the same of compose.cluster.yaml's every node, and:
                                        two or more, on one Redis (pinned Debian image,
                                        not persisted, with a password), with the same
                                        secrets, names and public URLs of their own, ports
                                        that do not collide, each scraped by Prometheus
  check.py compose-env CONFIG_OUTPUT SERVICE
                                        prints a service's environment, NAME=VALUE lines
  check.py compose-command CONFIG_OUTPUT SERVICE
                                        prints a service's command, NUL-terminated words
  check.py dockerfile DOCKERFILE        two stages, a non-root user, the default ports
                                        exposed, a HEALTHCHECK of /healthz
  check.py selftest HELP                each check above fails on a broken copy
  check.py ws-error URL                 makes the server send one signaling error (a join
                                        with a bad token), so that its counter exists

HELP is the text of `sfu serve --help`: every SFU_ variable a deployment sets must be one
it names (or one the Dockerfile's HEALTHCHECK reads).

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


def check_kubernetes(docs, known_env):
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
    # The Service of the servers' pods carries signaling only.
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    [svc] = [s for s in of_kind(docs, "Service") if selects(s, pod_labels)]
    ports = [(p["port"], p.get("protocol", "TCP")) for p in svc["spec"]["ports"]]
    http = urlport(config["http_listen"])
    expect(ports == [(http, "TCP")], f"the Service has ports {ports}, not signaling's only")
    check_kubernetes_cluster(docs, kustomization, spec, c, http, known_env)


def check_kubernetes_cluster(docs, kustomization, spec, c, http, known_env):
    """Each server a node of one cluster: named after its Kubernetes node, reached at a
    public URL of its own, on the Redis of redis.yaml; every variable it is given known
    to the server, and every $(NAME) expandable."""
    expect(spec.get("enableServiceLinks") is False,
           "Service links on: a Service named sfu-tcp would set SFU_TCP_PORT=tcp://...")
    env = c.get("env", [])
    check_env_expansion(env, c.get("args", []), "the server's")
    by_name = {e["name"]: e for e in env}
    unknown = sorted(n for n in by_name if n.startswith("SFU_") and n not in known_env)
    expect(not unknown, f"variables `sfu serve --help` does not name: {unknown}")

    def field(name):
        """The pod field a variable comes from, if it does."""
        return by_name.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get(
            "fieldPath")

    expect(field("SFU_NODE") == "spec.nodeName",
           "SFU_NODE is not the pod's node name (spec.nodeName): nodes need their own id")
    url = by_name.get("SFU_PUBLIC_URL", {}).get("value", "")
    m = re.fullmatch(r"(https?)://([^/]+?)(?::(\d+))?/?", url)
    expect(m, f"SFU_PUBLIC_URL {url!r} is not an http(s) base URL")
    per_node = [v for v in re.findall(r"\$\((\w+)\)", url) if field(v)]
    expect(per_node, f"SFU_PUBLIC_URL {url!r} is the same on every node (no $(VAR) of a "
           "fieldRef): every join would be redirected to one address")
    if m.group(1) == "http":
        expect(int(m.group(3) or 80) == http,
               f"SFU_PUBLIC_URL {url!r} is not the HTTP port {http}")
    # Redis: the URL's host is a Service of this directory, in front of one Redis.
    redis_url = by_name.get("SFU_REDIS", {}).get("value", "")
    r = re.fullmatch(r"redis://(?::\$\((\w+)\)@)?([\w.-]+):(\d+)/\d*", redis_url)
    expect(r, f"SFU_REDIS {redis_url!r} is not redis://:$(PASSWORD)@SERVICE:PORT/DB")
    password_var, host, port = r.group(1), r.group(2), int(r.group(3))
    svc = one([s for s in of_kind(docs, "Service") if s["metadata"]["name"] == host],
              f"a Service {host} (SFU_REDIS's host)")
    expect(port in [p["port"] for p in svc["spec"]["ports"]],
           f"the Service {host} has no port {port}")
    redis = one([d for d in of_kind(docs, "Deployment") + of_kind(docs, "StatefulSet")
                 if selects(svc, d["spec"]["template"]["metadata"].get("labels", {}))],
                f"one Redis workload behind the Service {host}")
    expect(redis["spec"].get("replicas", 1) == 1,
           "more than one Redis replica: each would be a cluster of its own")
    rspec = redis["spec"]["template"]["spec"]
    [rc] = rspec["containers"]
    expect(re.fullmatch(r"redis:\d+\.\d+\.\d+-bookworm", rc["image"]),
           f"Redis image {rc['image']} is not a pinned Debian one (redis:X.Y.Z-bookworm)")
    check_redis_args(rc.get("command", []) + rc.get("args", []))
    expect(not redis["spec"].get("volumeClaimTemplates") and all(
        set(v) <= {"name", "emptyDir"} for v in rspec.get("volumes", [])),
           "Redis keeps a volume: its state is leases the nodes rewrite every 2 s")
    rsc = rc.get("securityContext", {})
    expect(rsc.get("runAsNonRoot", rspec.get("securityContext", {}).get("runAsNonRoot"))
           is True, "Redis runs as root")
    expect(rsc.get("readOnlyRootFilesystem") is True, "Redis's root filesystem is writable")
    expect(rsc.get("capabilities", {}).get("drop") == ["ALL"], "Redis keeps capabilities")
    # One password, from a generated Secret, on both sides.
    renv = rc.get("env", [])
    check_env_expansion(renv, rc.get("args", []), "Redis's")
    args = rc.get("args", [])
    expect("--requirepass" in args, "Redis has no password (any pod could write nodes)")
    rvar = re.fullmatch(r"\$\((\w+)\)", args[args.index("--requirepass") + 1])
    expect(rvar and password_var, "the Redis password is not a $(VAR) on both sides")

    def secret_of(env, name):
        return one([e for e in env if e["name"] == name], f"one {name}")["valueFrom"][
            "secretKeyRef"]

    server_key, redis_key = secret_of(env, password_var), secret_of(renv, rvar.group(1))
    expect(server_key == redis_key,
           f"the servers' Redis password {server_key} is not Redis's {redis_key}")
    generated = {g["name"]: g.get("files", [])
                 for g in kustomization.get("secretGenerator", [])}
    expect(server_key["key"] in generated.get(server_key["name"], []),
           f"no secretGenerator makes {server_key}")


def check_env_expansion(env, args, whose):
    """Kubernetes expands $(NAME) only from the variables listed before; any other is
    left as it is, and the server would get the literal text."""
    defined = set()
    for e in env:
        for ref in re.findall(r"\$\((\w+)\)", e.get("value", "")):
            expect(ref in defined, f"{whose} {e['name']} uses $({ref}), not defined above it")
        defined.add(e["name"])
    for a in args:
        for ref in re.findall(r"\$\((\w+)\)", a):
            expect(ref in defined, f"{whose} args use $({ref}), which env does not define")


def check_redis_args(words):
    """Nothing persisted: no snapshot (--save ""), no append-only file."""
    pairs = dict(zip(words, words[1:]))
    expect(pairs.get("--save", "x") == "" and pairs.get("--appendonly") == "no",
           f"Redis persists (wants --save \"\" --appendonly no): {words}")


def one(items, what):
    expect(len(items) == 1, f"not {what}: {len(items)} found")
    return items[0]


def selects(service, labels):
    selector = service["spec"].get("selector", {})
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def urlport(listen):
    return int(listen.rsplit(":", 1)[1])


def help_env(help_text, dockerfile_text):
    """The SFU_ variables a deployment may set: those `sfu serve --help` names, and those
    the Dockerfile's HEALTHCHECK reads."""
    names = set(re.findall(r"\[env: (SFU_\w+)", help_text))
    expect(len(names) > 20, f"the --help text names only {sorted(names)}")
    return names | set(re.findall(r"\$\{?(SFU_\w+)", healthcheck_script(dockerfile_text)))


# --- Compose and the Dockerfile -----------------------------------------------------

def check_compose(config, known_env):
    services = config["services"]
    check_compose_server("sfu", services["sfu"], known_env)
    check_compose_monitoring(services, "prometheus/prometheus.yml")


def check_compose_server(name, sfu, known_env):
    expect(sfu.get("network_mode") == "host", f"{name} is not on the host's network")
    expect("ports" not in sfu, "host networking publishes no ports")
    grace = sfu.get("stop_grace_period", "10s")
    expect(grace == f"{3600 + DRAIN_MARGIN_S}s", f"stop_grace_period {grace} cuts the drain")
    expect(sfu.get("read_only") is True, f"{name}'s filesystem is writable")
    expect("ALL" in sfu.get("cap_drop", []), f"{name}'s capabilities are not dropped")
    env = sfu.get("environment", {})
    expect(env.get("SFU_SECRET_FILE", "").startswith("/run/secrets/"),
           f"{name}'s secret does not come as a file")
    unknown = sorted(n for n in env if n.startswith("SFU_") and n not in known_env)
    expect(not unknown, f"{name}: variables `sfu serve --help` does not name: {unknown}")


def check_compose_monitoring(services, prometheus_config):
    mounted = " ".join(str(v) for s in services.values() for v in s.get("volumes", []))
    for path in (prometheus_config, "grafana/provisioning", "grafana/dashboards"):
        expect(path in mounted, f"{path} is not mounted")


# The settings by which nodes on one host's network must differ, and what they hold:
# TCP ports, UDP ports, or both (TURN listens on both).
NODE_PORTS = {"SFU_HTTP_LISTEN": ("tcp",), "SFU_UDP_PORTS": ("udp",),
              "SFU_TCP_PORT": ("tcp",), "SFU_TURN_LISTEN": ("tcp", "udp"),
              "SFU_TURN_RELAY_PORTS": ("udp",)}


def compose_mounts(service):
    """(source, target) of each volume, in the short form or the long."""
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            yield str(v.get("source", "")), v["target"]
        else:
            source, target = (str(v).split(":") + [""])[:2]
            yield source, target


def port_range(value):
    """The ports of `0.0.0.0:8080`, `8080` or `16384-16584`, as (first, last)."""
    value = str(value).rsplit(":", 1)[-1]
    first, _, last = value.partition("-")
    return int(first), int(last or first)


def check_compose_cluster(config, known_env):
    """Two or more servers, each as compose.yaml's, on one Redis: what they must share
    and what each must have of its own on one host's network."""
    services = config["services"]
    nodes = {n: s for n, s in services.items() if str(s.get("image", "")).startswith("sfu")}
    expect(len(nodes) >= 2, f"the cluster has {len(nodes)} server(s), not two or more")
    envs = {}
    for name, sfu in nodes.items():
        check_compose_server(name, sfu, known_env)
        envs[name] = {k: str(v) for k, v in sfu.get("environment", {}).items()}
    # What every node shares: the Redis, the secrets, the config.
    for key in ("SFU_REDIS", "SFU_SECRET_FILE", "SFU_ADMIN_SECRET_FILE", "SFU_CONFIG"):
        values = {e.get(key) for e in envs.values()}
        expect(len(values) == 1 and None not in values,
               f"the nodes' {key} differ or are unset: {sorted(map(str, values))}")
    secrets = {n: sorted(x if isinstance(x, str) else x["source"]
                         for x in s.get("secrets", [])) for n, s in nodes.items()}
    expect(len({tuple(v) for v in secrets.values()}) == 1,
           f"the nodes do not share their secrets: {secrets}")
    # What each node has of its own: a name, a public URL on its HTTP port, ports.
    for key in ("SFU_NODE", "SFU_PUBLIC_URL", *NODE_PORTS):
        missing = [n for n, e in envs.items() if key not in e]
        expect(not missing, f"{missing} leave {key} to sfu.toml, where every node has "
               "the same")
        values = [e[key] for e in envs.values()]
        expect(len(set(values)) == len(values), f"nodes share {key}: {values}")
    taken = []
    for name, e in envs.items():
        http = port_range(e["SFU_HTTP_LISTEN"])[0]
        url = e["SFU_PUBLIC_URL"]
        m = re.fullmatch(r"(https?)://[^/:]+(?::(\d+))?/?", url)
        expect(m, f"{name}'s SFU_PUBLIC_URL {url} is not an http(s) base URL")
        # An https:// URL may be a proxy's, on its own port.
        expect(m.group(1) == "https" or int(m.group(2) or 80) == http,
               f"{name}'s SFU_PUBLIC_URL {url} is not its HTTP port {http}")
        health = int(e.get("SFU_HEALTH_PORT", 8080))
        expect(health == http, f"{name}'s HEALTHCHECK asks port {health}, not {http}")
        for key, protocols in NODE_PORTS.items():
            first, last = port_range(e[key])
            expect(first <= last, f"{name}'s {key} {e[key]} is empty")
            for proto in protocols:
                for other, oproto, ofirst, olast, okey in taken:
                    expect(proto != oproto or last < ofirst or olast < first,
                           f"{name}'s {key} {e[key]} collides with {other}'s {okey} "
                           f"({proto})")
                taken.append((name, proto, first, last, key))
    # The Redis they share.
    redis_url = envs[next(iter(envs))]["SFU_REDIS"]
    r = re.fullmatch(r"redis://(?::([^@]*)@)?([\w.-]+):(\d+)/\d*", redis_url)
    expect(r, f"SFU_REDIS {redis_url!r} is not redis://:PASSWORD@HOST:PORT/DB")
    password, host, port = r.groups()
    redis = one([s for s in services.values()
                 if str(s.get("image", "")).startswith("redis:")], "one Redis service")
    expect(re.fullmatch(r"redis:\d+\.\d+\.\d+-bookworm", redis["image"]),
           f"Redis image {redis['image']} is not a pinned Debian one (redis:X.Y.Z-bookworm)")
    expect(redis.get("network_mode") == "host", "Redis is not on the host's network")
    words = [str(w) for w in redis.get("command", [])]
    check_redis_args(words)
    expect(not redis.get("volumes"), "Redis keeps a volume: its state is leases")
    args = dict(zip(words, words[1:]))
    expect(password and args.get("--requirepass") == password,
           "the nodes' SFU_REDIS password is not Redis's --requirepass")
    expect(args.get("--bind", "").split()[:1] == [host] and int(args.get("--port", 6379))
           == int(port), f"Redis does not listen where SFU_REDIS points ({host}:{port})")
    # Prometheus scrapes every node.
    prometheus = one([s for n, s in services.items() if n == "prometheus"], "Prometheus")
    source = one([src for src, target in compose_mounts(prometheus)
                  if target == "/etc/prometheus/prometheus.yml"], "Prometheus's config")
    path = os.path.join(DEPLOY, source)  # as it is when absolute
    check_compose_monitoring(services, "prometheus/" + os.path.basename(path))
    targets = {t for job in yaml.safe_load(open(path))["scrape_configs"]
               for sc in job.get("static_configs", []) for t in sc["targets"]}
    for name, e in envs.items():
        target = f"127.0.0.1:{port_range(e['SFU_HTTP_LISTEN'])[0]}"
        expect(target in targets, f"Prometheus does not scrape {name} ({target})")


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

def selftest(known_env):
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
    check_kubernetes(docs, known_env)

    def spec(d):
        return of_kind(d, "DaemonSet")[0]["spec"]["template"]["spec"]

    def container(d):
        return spec(d)["containers"][0]

    def cm(d):
        return of_kind(d, "ConfigMap")[0]["data"]

    def service(d, name):
        return one([s for s in of_kind(d, "Service") if s["metadata"]["name"] == name], name)

    def env(d, name):
        return one([e for e in container(d)["env"] if e["name"] == name], name)

    def replace_env(d, name, **entry):
        variables = container(d)["env"]
        variables[variables.index(env(d, name))] = {"name": name, **entry}

    def redis(d):
        return of_kind(d, "Deployment")[0]

    def redis_container(d):
        return redis(d)["spec"]["template"]["spec"]["containers"][0]

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
        "media ports in the Service": lambda d: service(d, "sfu")["spec"][
            "ports"].append({"port": 16384, "protocol": "UDP"}),
        "Service links on": lambda d: spec(d).pop("enableServiceLinks"),
        "a variable the server does not know": lambda d: container(d)["env"].append(
            {"name": "SFU_NODES", "value": "x"}),
        "one node id on every node": lambda d: replace_env(d, "SFU_NODE", value="sfu"),
        "one public URL on every node": lambda d: env(d, "SFU_PUBLIC_URL").update(
            value="https://calls.example.org"),
        "a public URL not on the HTTP port": lambda d: env(d, "SFU_PUBLIC_URL").update(
            value="http://$(HOST_IP):80"),
        "a $(VAR) defined after its use": lambda d: container(d)["env"].sort(
            key=lambda e: e["name"] != "SFU_PUBLIC_URL"),
        "SFU_REDIS naming no Service": lambda d: env(d, "SFU_REDIS").update(
            value="redis://:$(REDIS_PASSWORD)@redis-master:6379/0"),
        "no SFU_REDIS": lambda d: container(d)["env"].remove(env(d, "SFU_REDIS")),
        "two Redis replicas": lambda d: redis(d)["spec"].update(replicas=2),
        "Redis unpinned": lambda d: redis_container(d).update(image="redis"),
        "Redis persisting": lambda d: redis_container(d).update(
            args=["--requirepass", "$(REDIS_PASSWORD)"]),
        "Redis on a volume claim": lambda d: redis(d)["spec"]["template"]["spec"][
            "volumes"].append({"name": "d", "persistentVolumeClaim": {"claimName": "d"}}),
        "Redis as root": lambda d: redis(d)["spec"]["template"]["spec"][
            "securityContext"].update(runAsNonRoot=False),
        "Redis without a password": lambda d: redis_container(d).update(
            args=["--save", "", "--appendonly", "no"]),
        "the servers' Redis password another Secret's": lambda d: env(
            d, "REDIS_PASSWORD")["valueFrom"]["secretKeyRef"].update(name="sfu-secret"),
    }
    for what, breakage in breakages.items():
        broken = copy.deepcopy(docs)
        breakage(broken)
        must_fail(what, check_kubernetes, broken, known_env)

    dockerfile = open(os.path.join(DEPLOY, "Dockerfile")).read()
    check_dockerfile(dockerfile)
    must_fail("a Dockerfile running as root", check_dockerfile,
              dockerfile + "USER root\n")
    must_fail("a Dockerfile without the UDP range", check_dockerfile,
              dockerfile.replace("16384-16584/udp", ""))
    compose = yaml.safe_load(open(os.path.join(DEPLOY, "compose.yaml")))
    check_compose(compose, known_env)
    broken = copy.deepcopy(compose)
    broken["services"]["sfu"].pop("network_mode")
    must_fail("compose without host networking", check_compose, broken, known_env)
    broken = copy.deepcopy(compose)
    broken["services"]["sfu"]["environment"]["SFU_NO_SUCH_SETTING"] = "1"
    must_fail("compose setting a variable the server does not know", check_compose,
              broken, known_env)

    cluster = compose_interpolated(os.path.join(DEPLOY, "compose.cluster.yaml"),
                                   {"SFU_ADVERTISE_IP": "192.0.2.1", "REDIS_PASSWORD": "ab"})
    check_compose_cluster(cluster, known_env)

    def node(c, n):
        return c["services"][f"sfu-{n}"]["environment"]

    def redis(c):
        return c["services"]["redis"]

    def prometheus_config(path):
        def set_config(c):
            c["services"]["prometheus"]["volumes"][0] = \
                f"{path}:/etc/prometheus/prometheus.yml:ro"
        return set_config

    cluster_breakages = {
        "one node": lambda c: [c["services"].pop(f"sfu-{n}") for n in (2, 3)],
        "two nodes of one name": lambda c: node(c, 2).update(SFU_NODE="sfu-1"),
        "a node without its name": lambda c: node(c, 2).pop("SFU_NODE"),
        "two nodes of one public URL": lambda c: node(c, 2).update(
            SFU_PUBLIC_URL=node(c, 1)["SFU_PUBLIC_URL"]),
        "a public URL not on the node's port": lambda c: node(c, 2).update(
            SFU_PUBLIC_URL="http://192.0.2.1:9999"),
        "a health check of another port": lambda c: node(c, 2).update(SFU_HEALTH_PORT="8080"),
        "two nodes on one HTTP port": lambda c: node(c, 2).update(
            SFU_HTTP_LISTEN="0.0.0.0:8080"),
        "media ranges overlapping": lambda c: node(c, 2).update(SFU_UDP_PORTS="16500-16700"),
        "a media range over the TURN relay's": lambda c: node(c, 3).update(
            SFU_UDP_PORTS="49200-49400"),
        "ICE-TCP on another node's HTTP port": lambda c: node(c, 3).update(SFU_TCP_PORT="8081"),
        "TURN left to sfu.toml": lambda c: node(c, 3).pop("SFU_TURN_LISTEN"),
        "nodes on two Redis": lambda c: node(c, 2).update(
            SFU_REDIS="redis://:ab@127.0.0.1:6380/0"),
        "nodes of two join-token secrets": lambda c: node(c, 2).update(
            SFU_SECRET_FILE="/run/secrets/other"),
        "a node without the admin secret": lambda c: node(c, 3).pop("SFU_ADMIN_SECRET_FILE"),
        "a variable the server does not know": lambda c: node(c, 1).update(SFU_NODES="x"),
        "Redis unpinned": lambda c: redis(c).update(image="redis:latest"),
        "Redis on Alpine": lambda c: redis(c).update(image="redis:7.2.5-alpine"),
        "Redis saving snapshots": lambda c: redis(c)["command"].remove(""),
        "Redis without a password": lambda c: redis(c).update(command=[
            w for w in redis(c)["command"] if w not in ("--requirepass", "ab")]),
        "Redis elsewhere than SFU_REDIS": lambda c: redis(c)["command"].__setitem__(
            redis(c)["command"].index("6379"), "6380"),
        "Prometheus scraping one node": prometheus_config("./prometheus/prometheus.yml"),
    }
    for what, breakage in cluster_breakages.items():
        broken = copy.deepcopy(cluster)
        breakage(broken)
        must_fail(what, check_compose_cluster, broken, known_env)


def compose_interpolated(path, values):
    """A compose file as compose reads it: ${NAME}, ${NAME:?message} and ${NAME:-default}
    replaced by VALUES (or the default), and YAML's anchors and merge keys resolved."""
    def value(m):
        return values.get(m.group(1), m.group(3) if m.group(2) == ":-" else "")
    text = re.sub(r"\$\{(\w+)(?:(:[?-])([^}]*))?\}", value, open(path).read())
    return yaml.safe_load(text)


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


def known(help_path):
    return help_env(open(help_path).read(), open(os.path.join(DEPLOY, "Dockerfile")).read())


def main(argv):
    try:
        match argv:
            case ["dashboard", dashboard, metrics]:
                names = check_dashboard(json.load(open(dashboard)), open(metrics).read())
                print(f"dashboard: all {len(names)} queried metrics exported: "
                      + " ".join(names))
            case ["kubernetes", directory, help_path]:
                check_kubernetes(load_kubernetes(directory), known(help_path))
                print("kubernetes: the manifests have what issue 18 names, and each server"
                      " is a node of its own on the one Redis of redis.yaml")
            case ["compose", output, help_path]:
                check_compose(yaml.safe_load(open(output)), known(help_path))
                print("compose: host networking, drain grace, Prometheus and Grafana wired")
            case ["compose-cluster", output, help_path]:
                check_compose_cluster(yaml.safe_load(open(output)), known(help_path))
                print("compose cluster: nodes of their own names, URLs and ports on one "
                      "Redis, sharing the secrets, each scraped")
            case ["compose-env", output, service]:
                env = yaml.safe_load(open(output))["services"][service]["environment"]
                print("\n".join(f"{k}={v}" for k, v in env.items()))
            case ["compose-command", output, service]:
                command = yaml.safe_load(open(output))["services"][service]["command"]
                sys.stdout.write("".join(f"{w}\0" for w in command))
            case ["dockerfile", path]:
                check_dockerfile(open(path).read())
                print("dockerfile: two stages, non-root, ports exposed, HEALTHCHECK")
            case ["healthcheck-script", path]:
                print(healthcheck_script(open(path).read()))
            case ["selftest", help_path]:
                selftest(known(help_path))
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
