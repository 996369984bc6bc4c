#!/usr/bin/env python3
"""Consistency checks behind deploy/validate.sh (which runs them with its venv's Python).

  validate.py metrics RULES_OUT   every metric (and label) that the Grafana dashboard and
                                  the alert rules use is one the Rust sources register;
                                  the dashboard's queries are written to RULES_OUT as
                                  recording rules, for `promtool check rules` to parse
  validate.py manifests FILE...   rendered Kubernetes manifests (kubectl kustomize) wire
                                  every binary as deploy/k8s/README.md says
  validate.py compose             docker-compose.yml and deploy/prometheus/prometheus.yml
                                  agree on the binaries' ops ports and health checks, and
                                  kubernetes-scrape.yml labels targets as prometheus.yml

Exit status 1 with one line per problem.
"""
import json
import os
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/grafana/switchboard.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
PROMETHEUS = ROOT / "deploy/prometheus/prometheus.yml"
K8S_SCRAPE = ROOT / "deploy/prometheus/kubernetes-scrape.yml"
COMPOSE = ROOT / "docker-compose.yml"

# The binaries that serve ops endpoints, and their ops ports in containers.
OPS_PORTS = {
    "gateway": 9100,
    "normalizer": 9101,
    "pg-sink": 9102,
    "ch-sink": 9103,
    "router": 9104,
    "fanout": 9105,
    "replayer": 9106,
}
# Static group membership: these two take SWITCHBOARD_GROUP_INSTANCE_ID.
STATIC_MEMBERS = {"router", "fanout"}
# Variables several binaries read with different meanings: one workload's env only.
PER_BINARY = {
    "SWITCHBOARD_OPS_ADDR", "SWITCHBOARD_HTTP_ADDR", "SWITCHBOARD_GROUP_ID",
    "SWITCHBOARD_GROUP_INSTANCE_ID", "SWITCHBOARD_MAX_IN_FLIGHT",
    "SWITCHBOARD_BREAKER_FAILURES", "SWITCHBOARD_BREAKER_OPEN_FOR",
}
# Labels that scraping adds (prometheus.yml here, the Kubernetes job in the k8s README).
TARGET_LABELS = {"job", "instance", "service", "namespace", "pod"}
# Metrics from elsewhere that the alerts may use.
EXTERNAL_METRICS = {"up", "kube_pod_status_ready"}
# Grafana's variables, replaced so that promtool can parse the queries.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m", "$bsp": ".*"}

problems = []


def problem(msg):
    problems.append(msg)


# ------------------------------------------------------------------------------ metrics

REGISTRATION = re.compile(
    r'(?:register_(?P<macro>\w+)!\s*\(|(?P<opts>Histogram)?Opts::new\(|(?:Int)?(?:Counter|Gauge)::new\()\s*"(?P<name>switchboard_[a-z0-9_]+)"'
)


def rust_sources():
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in ("target", ".git", "node_modules")]
        for f in filenames:
            if f.endswith(".rs"):
                yield pathlib.Path(dirpath, f)


def registered_metrics():
    """name -> (is_histogram, labels) for every metric the Rust sources register."""
    found = {}
    for path in rust_sources():
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in REGISTRATION.finditer(text):
            rest = text[m.end():m.end() + 800]
            rest = re.split(r"\.expect\(|;", rest, maxsplit=1)[0]
            labels = re.search(r"&\[([^\]]*)\]", rest)
            names = set(re.findall(r'"([^"]+)"', labels.group(1))) if labels else set()
            hist = "histogram" in (m.group("macro") or "") or bool(m.group("opts"))
            found[m.group("name")] = (hist, names)
    return found


def resolve(name, metrics):
    """(base metric, extra labels) for a series name, or None."""
    if name in metrics:
        return name, set()
    for suffix, extra in (("_bucket", {"le"}), ("_sum", set()), ("_count", set())):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and base in metrics and metrics[base][0]:
            return base, extra
    return None


def check_expr(where, expr, metrics):
    used_labels = set()
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", expr):
        name = m.group(1)
        if not name.startswith("switchboard_") and name not in EXTERNAL_METRICS:
            problem(f"{where}: metric {name} is neither a Switchboard metric nor an allowed external one")
    for m in re.finditer(r"\b(switchboard_[a-z0-9_]+)\b(?:\s*\{([^}]*)\})?", expr):
        name, matchers = m.group(1), m.group(2) or ""
        r = resolve(name, metrics)
        if r is None:
            problem(f"{where}: metric {name} is not registered in the Rust sources")
            continue
        base, extra = r
        allowed = metrics[base][1] | extra | TARGET_LABELS
        used_labels |= allowed
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
            if label not in allowed:
                problem(f"{where}: {name} has no label {label!r} (it has {sorted(metrics[base][1] | extra)})")
    for m in re.finditer(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        for label in filter(None, (x.strip() for x in m.group(1).split(","))):
            if used_labels and label not in used_labels:
                problem(f"{where}: grouping by {label!r}, which no metric of the query has")


def dashboard_exprs(node, path="dashboard"):
    if isinstance(node, dict):
        title = node.get("title")
        here = f"{path}/{title}" if title else path
        if isinstance(node.get("expr"), str):
            yield here, node["expr"]
        for k, v in node.items():
            if k != "expr":
                yield from dashboard_exprs(v, here)
    elif isinstance(node, list):
        for v in node:
            yield from dashboard_exprs(v, path)


def check_metrics(rules_out):
    metrics = registered_metrics()
    if len(metrics) < 10:
        problem(f"found only {len(metrics)} metric registrations in the Rust sources: the pattern is stale")
    try:
        dash = json.loads(DASHBOARD.read_text())
    except ValueError as e:
        problem(f"{DASHBOARD.name}: not JSON: {e}")
        dash = {}
    if dash:
        if not 36 <= dash.get("schemaVersion", 0) <= 41:
            problem(f"{DASHBOARD.name}: schemaVersion {dash.get('schemaVersion')}, expected about 39")
        ds_vars = [v for v in dash.get("templating", {}).get("list", []) if v.get("type") == "datasource"]
        if not ds_vars and "__inputs" not in dash:
            problem(f"{DASHBOARD.name}: no datasource variable or input")
        ids = [p.get("id") for p in dash.get("panels", [])]
        if len(ids) != len(set(ids)):
            problem(f"{DASHBOARD.name}: panel ids are not unique")
        for v in dash.get("templating", {}).get("list", []):
            q = v.get("definition") or ""
            lv = re.match(r"label_values\((\w+),\s*(\w+)\)", q)
            if lv:
                check_expr(f"dashboard/variable {v['name']}", f"{lv.group(1)}{{{lv.group(2)}=\"\"}}", metrics)
    rules = []
    for i, (where, expr) in enumerate(dashboard_exprs(dash.get("panels", []))):
        check_expr(where, expr, metrics)
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        if "$" in expr:
            problem(f"{where}: unknown Grafana variable in {expr!r}")
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    pathlib.Path(rules_out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    alerts = yaml.safe_load(ALERTS.read_text())
    n = 0
    for group in alerts.get("groups", []):
        for rule in group.get("rules", []):
            n += 1
            check_expr(f"alerts/{rule.get('alert') or rule.get('record')}", rule["expr"], metrics)
    used = {m for _, e in dashboard_exprs(dash) for m in re.findall(r"switchboard_[a-z0-9_]+", e)}
    used |= {m for g in alerts.get("groups", []) for r in g.get("rules", []) for m in re.findall(r"switchboard_[a-z0-9_]+", r["expr"])}
    used = {resolve(m, metrics)[0] for m in used if resolve(m, metrics)}
    print(f"metrics: {len(metrics)} registered in the Rust sources, {len(used)} used by "
          f"{len(rules)} dashboard queries and {n} alert rules")
    unused = sorted(set(metrics) - used)
    if unused:
        print(f"metrics: not on the dashboard or in alerts: {', '.join(unused)}")


# ---------------------------------------------------------------------------- manifests

def documented_variables():
    names = set()
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| `SWITCHBOARD_"):
            names |= set(re.findall(r"`(SWITCHBOARD_[A-Z0-9_]+)`", line.split("|")[1]))
    return names


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_manifests(files):
    documented = documented_variables()
    for f in files:
        docs = [d for d in yaml.safe_load_all(pathlib.Path(f).read_text()) if d]
        name = pathlib.Path(f).name
        by_kind = {}
        for d in docs:
            by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        configmaps = by_kind.get("ConfigMap", {})
        secrets = by_kind.get("Secret", {})
        workloads = {**by_kind.get("Deployment", {}), **by_kind.get("StatefulSet", {})}
        images = set()

        for cm in configmaps.values():
            for key in cm.get("data", {}):
                if key in PER_BINARY:
                    problem(f"{name}: ConfigMap {cm['metadata']['name']} sets {key}, which differs per binary")
        for obj in list(configmaps.values()) + list(secrets.values()):
            for key in list(obj.get("data", {})) + list(obj.get("stringData", {})):
                if key.startswith("SWITCHBOARD_") and key not in documented:
                    problem(f"{name}: {obj['kind']} {obj['metadata']['name']}: {key} is not in the README's table")

        for binary, port in OPS_PORTS.items():
            w = workloads.get(binary)
            if w is None:
                problem(f"{name}: no Deployment or StatefulSet {binary}")
                continue
            want_kind = "StatefulSet" if binary in STATIC_MEMBERS else "Deployment"
            if w["kind"] != want_kind:
                problem(f"{name}: {binary} is a {w['kind']}, expected a {want_kind}")
            tpl = w["spec"]["template"]
            spec = tpl["spec"]
            pod_labels = tpl["metadata"].get("labels", {})
            if not matches(w["spec"]["selector"]["matchLabels"], pod_labels):
                problem(f"{name}: {binary}: selector does not match its pod labels")
            ann = tpl["metadata"].get("annotations", {})
            want_ann = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
            for k, v in want_ann.items():
                if ann.get(k) != v:
                    problem(f"{name}: {binary}: annotation {k} is {ann.get(k)!r}, expected {v!r}")
            if spec.get("terminationGracePeriodSeconds", 30) < 30:
                problem(f"{name}: {binary}: terminationGracePeriodSeconds under 30")
            psc = spec.get("securityContext", {})
            if not (psc.get("runAsNonRoot") and psc.get("runAsUser") == 65534):
                problem(f"{name}: {binary}: pod must run as non-root uid 65534")
            containers = spec["containers"]
            main = next((c for c in containers if c["name"] == binary), None)
            if main is None:
                problem(f"{name}: {binary}: no container named {binary}")
                continue
            if main.get("command") != [binary]:
                problem(f"{name}: {binary}: command is {main.get('command')}, expected [{binary!r}]")
            env = {e["name"]: e for e in main.get("env", [])}
            if env.get("SWITCHBOARD_OPS_ADDR", {}).get("value") != f"0.0.0.0:{port}":
                problem(f"{name}: {binary}: SWITCHBOARD_OPS_ADDR must be 0.0.0.0:{port}")
            if binary == "gateway" and env.get("SWITCHBOARD_HTTP_ADDR", {}).get("value") != "0.0.0.0:8080":
                problem(f"{name}: gateway: SWITCHBOARD_HTTP_ADDR must be 0.0.0.0:8080")
            if binary in STATIC_MEMBERS:
                ref = env.get("SWITCHBOARD_GROUP_INSTANCE_ID", {}).get("valueFrom", {}).get("fieldRef", {})
                if ref.get("fieldPath") != "metadata.name":
                    problem(f"{name}: {binary}: SWITCHBOARD_GROUP_INSTANCE_ID must come from metadata.name")
            elif "SWITCHBOARD_GROUP_INSTANCE_ID" in env:
                problem(f"{name}: {binary} does not read SWITCHBOARD_GROUP_INSTANCE_ID")
            for var in env:
                if var.startswith("SWITCHBOARD_") and var not in documented:
                    problem(f"{name}: {binary}: {var} is not in the README's table")
            ports = {p.get("name"): p["containerPort"] for p in main.get("ports", [])}
            if ports.get("ops") != port:
                problem(f"{name}: {binary}: container port 'ops' must be {port}")
            if binary == "gateway" and ports.get("http") != 8080:
                problem(f"{name}: gateway: container port 'http' must be 8080")
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
                get = main.get(probe, {}).get("httpGet", {})
                if get.get("path") != path or get.get("port") not in ("ops", port):
                    problem(f"{name}: {binary}: {probe} must GET {path} on the ops port")
            if not main.get("lifecycle", {}).get("preStop"):
                problem(f"{name}: {binary}: no preStop hook")
            for c in containers + spec.get("initContainers", []):
                images.add(c["image"])
                sc = c.get("securityContext", {})
                if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
                        and "ALL" in sc.get("capabilities", {}).get("drop", [])):
                    problem(f"{name}: {binary}/{c['name']}: needs readOnlyRootFilesystem, no privilege escalation, drop ALL")
                res = c.get("resources", {})
                for part in ("requests", "limits"):
                    if not {"cpu", "memory"} <= set(res.get(part, {})):
                        problem(f"{name}: {binary}/{c['name']}: resources.{part} needs cpu and memory")
                for src in c.get("envFrom", []):
                    if "configMapRef" in src and src["configMapRef"]["name"] not in configmaps:
                        problem(f"{name}: {binary}: envFrom ConfigMap {src['configMapRef']['name']} does not exist")
                    # An optional Secret (the media store's credentials) may be absent.
                    if ("secretRef" in src and src["secretRef"]["name"] not in secrets
                            and not src["secretRef"].get("optional")):
                        problem(f"{name}: {binary}: envFrom Secret {src['secretRef']['name']} does not exist")
            pdbs = [p for p in by_kind.get("PodDisruptionBudget", {}).values()
                    if matches(p["spec"]["selector"].get("matchLabels", {}), pod_labels)]
            if len(pdbs) != 1:
                problem(f"{name}: {binary}: {len(pdbs)} PodDisruptionBudgets select it, expected 1")
            if w["kind"] == "StatefulSet" and w["spec"].get("serviceName") not in by_kind.get("Service", {}):
                problem(f"{name}: {binary}: serviceName {w['spec'].get('serviceName')} is not a Service")

        for svc in by_kind.get("Service", {}).values():
            targets = [w for w in workloads.values() if matches(svc["spec"].get("selector", {}), w["spec"]["template"]["metadata"].get("labels", {}))]
            if len(targets) != 1:
                problem(f"{name}: Service {svc['metadata']['name']} selects {len(targets)} workloads")
                continue
            names = {p.get("name") for c in targets[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
            for p in svc["spec"]["ports"]:
                if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names:
                    problem(f"{name}: Service {svc['metadata']['name']}: targetPort {p['targetPort']} is no container port")
        gw_svc = by_kind.get("Service", {}).get("gateway")
        if not gw_svc or not any(p["port"] == 8080 for p in gw_svc["spec"]["ports"]):
            problem(f"{name}: no Service gateway on port 8080")
        for ing in by_kind.get("Ingress", {}).values():
            for rule in ing["spec"].get("rules", []):
                for p in rule.get("http", {}).get("paths", []):
                    s = p["backend"]["service"]["name"]
                    if s not in by_kind.get("Service", {}):
                        problem(f"{name}: Ingress {ing['metadata']['name']} points at missing Service {s}")
        for job in by_kind.get("Job", {}).values():
            for c in job["spec"]["template"]["spec"]["containers"]:
                images.add(c["image"])
                if c.get("command", [None])[0] != "switchboard":
                    problem(f"{name}: Job {job['metadata']['name']} should run the switchboard CLI")
        if len(images) != 1:
            problem(f"{name}: containers use {len(images)} images ({sorted(images)}), expected the one image")
        print(f"manifests: {name}: {len(docs)} objects, {len(workloads)} workloads, image {', '.join(sorted(images))}")


# ------------------------------------------------------------------------------ compose

def check_compose():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose.get("services", {})
    for binary, port in OPS_PORTS.items():
        s = services.get(binary)
        if s is None:
            problem(f"docker-compose.yml: no service {binary}")
            continue
        if s.get("command") != [binary]:
            problem(f"docker-compose.yml: {binary}: command {s.get('command')}")
        if (s.get("environment") or {}).get("SWITCHBOARD_OPS_ADDR") != f"0.0.0.0:{port}":
            problem(f"docker-compose.yml: {binary}: SWITCHBOARD_OPS_ADDR must be 0.0.0.0:{port}")
        test = " ".join((s.get("healthcheck") or {}).get("test", []))
        if f"/dev/tcp/127.0.0.1/{port}" not in test or "/readyz" not in test:
            problem(f"docker-compose.yml: {binary}: health check must GET /readyz on port {port}")
    if "prometheus" not in services:
        problem("docker-compose.yml: no prometheus service")
    prom = yaml.safe_load(PROMETHEUS.read_text())
    targets = {}
    for job in prom.get("scrape_configs", []):
        if job.get("job_name") != "switchboard":
            continue
        for sc in job.get("static_configs", []):
            for t in sc.get("targets", []):
                targets[t] = sc.get("labels", {}).get("service")
    want = {f"{b}:{p}": b for b, p in OPS_PORTS.items()}
    if targets != want:
        problem(f"prometheus.yml: job switchboard scrapes {targets}, expected {want}")
    print(f"compose: {len(OPS_PORTS)} binaries with /readyz health checks, scraped by prometheus.yml")
    check_k8s_scrape()


def check_k8s_scrape():
    """The Kubernetes job keeps the ops ports of Switchboard pods and sets service."""
    jobs = yaml.safe_load(K8S_SCRAPE.read_text()).get("scrape_configs", [])
    job = next((j for j in jobs if j.get("job_name") == "switchboard"), None)
    if job is None or not job.get("kubernetes_sd_configs"):
        problem(f"{K8S_SCRAPE.name}: no job switchboard with kubernetes_sd_configs")
        return
    relabels = job.get("relabel_configs", [])
    for r in relabels:
        try:
            re.compile(r.get("regex", "(.*)"))
        except re.error as e:
            problem(f"{K8S_SCRAPE.name}: bad regex {r.get('regex')!r}: {e}")

    def has(**want):
        return any(all(r.get(k) == v for k, v in want.items()) for r in relabels)

    if not has(source_labels=["__meta_kubernetes_pod_container_port_name"], regex="ops", action="keep"):
        problem(f"{K8S_SCRAPE.name}: must keep only the container port named ops")
    if not has(source_labels=["__meta_kubernetes_pod_label_app_kubernetes_io_name"], target_label="service"):
        problem(f"{K8S_SCRAPE.name}: must set service from app.kubernetes.io/name")
    if not any(r.get("action") == "keep" and "__meta_kubernetes_pod_label_app_kubernetes_io_part_of" in r.get("source_labels", []) for r in relabels):
        problem(f"{K8S_SCRAPE.name}: must keep only pods of app.kubernetes.io/part-of=switchboard")
    print(f"scrape: {K8S_SCRAPE.name} keeps the ops ports of Switchboard pods, labelled as prometheus.yml")


def main(argv):
    if len(argv) >= 2 and argv[0] == "metrics":
        check_metrics(argv[1])
    elif len(argv) >= 2 and argv[0] == "manifests":
        check_manifests(argv[1:])
    elif argv == ["compose"]:
        check_compose()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(f"ERROR {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
