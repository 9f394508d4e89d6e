#!/usr/bin/env python3
"""Runs rendered Kubernetes manifests in Docker the way a kubelet would, then smoke-tests
OctoLLM through the Ingress's route (scripts/test-pods.sh runs it for the Kustomize
production overlay and the Helm chart).

    pod_runner.py run RENDERED.yaml --setup-image IMAGE --image REPO=LOCAL... [options]
    pod_runner.py cleanup RUN_ID                (what a killed run left behind)

The Services' forwarders and the cluster DNS run in containers: scripts/pod_network.py.

What it does with the rendered objects (the real YAML, nothing copied by hand):

- One Docker network (internal: no route out) stands for the cluster network. Each pod is a
  pause container holding the pod's IP and hostname; its init containers run in that network
  namespace one after the other, each to a zero exit, then its containers start.
- Containers get the pod spec's image (mapped to a local image by --image), command and args
  (command replaces the entry point, args the image's CMD; $(VAR) expanded), env and envFrom
  (ConfigMap and Secret values; fieldRef metadata.name/namespace/uid/labels/annotations,
  spec.nodeName/serviceAccountName, status.podIP/hostIP; resourceFieldRef), the Service
  variables Kubernetes injects (NAME_SERVICE_HOST, NAME_PORT, ...), workingDir, limits
  (memory without swap, CPU quota), and the security context: runAsUser/runAsGroup (a
  runAsNonRoot container that would run as root is refused), fsGroup and supplementalGroups
  as supplementary groups, readOnlyRootFilesystem (--read-only), capabilities
  (--cap-drop/--cap-add), allowPrivilegeEscalation: false (no-new-privileges), privileged,
  seccomp Unconfined.
- Volumes are Docker volumes prepared as the kubelet prepares them: emptyDir 0777 (tmpfs
  for medium Memory), a StatefulSet's claims 0755, configMap and secret volumes holding their
  keys (items, defaultMode, mode) read-only; with fsGroup each is group-owned by it,
  group-writable and setgid. readOnly mounts are read-only.
- Every Service with a cluster IP is a forwarder container at its own IP (the cluster IP),
  forwarding each Service port to the target port (number or container port name) of the
  Service's ready pods, round robin per connection; no ready pod: the connection is refused.
  So a Service port that differs from its target port works as in a cluster. A cluster DNS
  server (a container; Docker's own DNS answers unknown names in a way that stops glibc's
  search) answers NAME.NAMESPACE.svc.cluster.local with the cluster IP, or the ready pods'
  IPs for a headless Service, and POD.SERVICE... for a StatefulSet's pods; the pods resolve
  NAME, NAME.NAMESPACE and NAME.NAMESPACE.svc through the cluster search domains (ndots:5).
- Probes are polled as the kubelet polls them, from the node (this host) to the pod IP:
  httpGet (path, port by number or name, scheme, headers; 200-399), tcpSocket, exec (docker
  exec); initialDelaySeconds, periodSeconds, timeoutSeconds, successThreshold,
  failureThreshold; startupProbe gates the other two. A pod is ready when all its containers
  are; only ready pods are Service endpoints.
- Order: StatefulSets (each pod after the previous one is ready), then Jobs (Helm hooks too)
  to completion, then Deployments and DaemonSets. A cluster starts everything at once and lets
  pods crash-loop until their dependencies answer; the order lets this runner treat any
  restart as a failure: a container that exits (a Job's with a non-zero code beyond its
  backoffLimit) or fails its liveness probe failureThreshold times (the kubelet would restart
  it) fails the run, as does a pod not ready within --timeout. Failures print the pod's last
  log lines.
- The Ingress: a forwarder at its own IP (the ingress controller) in front of the Service its
  rules name; the smoke test enters there.
- ServiceMonitors become the scrape configuration of a Prometheus stand-in (job = Service
  name, as the Prometheus Operator names them).

Not modeled: scheduling and nodes (one node: nodeSelector, affinity, tolerations, topology
spread, requests, PriorityClass; a DaemonSet runs one pod), NetworkPolicy (every pod reaches
every pod), HPA and PDB (replicas: spec.replicas, else the HPA minimum, capped by
--max-replicas), the Ingress's hosts, TLS and annotations (a TCP forwarder, one backend),
emptyDir sizeLimit and ephemeral storage, terminationGracePeriodSeconds and lifecycle hooks,
service account tokens, image pulls (local images only), the API server. Helm hooks run as
plain Jobs before the Deployments. Job and crash backoff is 1 s doubling to 10 s (the
kubelet's starts at 10 s).

The OctoLLM part (--smoke): a test Secret for every secretKeyRef and secret volume the
workloads reference (random passwords and tokens, `octollm tokens keygen` for the capability
token keys, URLs naming the rendered datastore Services); after every pod is ready, an admin
API key made with `octollm keys create` inside an orchestrator container (as `kubectl exec`
would), scripts/smoke-tests.sh through the Ingress route with it (a task, its events, an
injection refused, the public routes, a document ingested through POST /documents and found by
a hybrid POST /search, Prometheus's scrapes); with the retriever on Qdrant, Qdrant then holds
the document's vectors.
"""
import argparse
import base64
import hashlib
import ipaddress
import math
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

LABEL = "octollm.pod-runner"
NETWORK_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pod_network.py")
DNS_SUFFIX = "svc.cluster.local"


class Failure(Exception):
    """The run fails: a pod never ready, a container exited or would be restarted, a smoke step."""


def log(message):
    print(f"pods: {message}", flush=True)


# --- small helpers ---

def docker(*args, check=True, timeout=120, input=None):
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise Failure(f"docker {' '.join(args[:3])} …: {result.stderr.strip() or result.stdout.strip()}")
    return result


def quantity(value):
    """A Kubernetes quantity as a float (cpu in cores, memory in bytes)."""
    value = str(value)
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3, "k": 1e3, "K": 1e3,
                "M": 1e6, "G": 1e9, "T": 1e12}
    for suffix, factor in sorted(suffixes.items(), key=lambda s: -len(s[0])):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def env_name(name):
    return re.sub(r"[^A-Za-z0-9_]", "_", name).upper()


def expand(text, env):
    """Kubernetes' $(VAR) expansion: defined variables are replaced, $$ escapes, others stay."""
    def sub(match):
        if match.group(0).startswith("$$"):
            return match.group(0)[1:]
        name = match.group(1)
        return env[name] if name in env else match.group(0)
    return re.sub(r"\$\$\([A-Za-z_][A-Za-z0-9_.-]*\)|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, str(text))


def matches(selector, labels):
    """A label selector (matchLabels and matchExpressions, or a Service's plain map)."""
    if selector is None:
        return False
    plain = {k: v for k, v in selector.items() if k not in ("matchLabels", "matchExpressions")}
    wanted = dict(plain, **(selector.get("matchLabels") or {}))
    if any(labels.get(k) != v for k, v in wanted.items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def image_repo(image):
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


def rand(n, alphabet="bcdfghjklmnpqrstvwxz2456789"):
    return "".join(random.choice(alphabet) for _ in range(n))


# --- the cluster stand-in ---

class Probe:
    def __init__(self, kind, spec, started):
        self.kind, self.spec = kind, spec
        self.period = spec.get("periodSeconds", 10)
        self.timeout = spec.get("timeoutSeconds", 1)
        self.failure_threshold = spec.get("failureThreshold", 3)
        self.success_threshold = spec.get("successThreshold", 1)
        self.due = started + spec.get("initialDelaySeconds", 0)
        self.failures = self.successes = 0
        self.passed = False  # succeeded at least once
        self.in_flight = False
        self.last_error = None


class Container:
    def __init__(self, pod, spec, docker_name, init=False):
        self.pod, self.spec, self.name, self.init = pod, spec, spec["name"], init
        self.docker_name = docker_name
        self.started = None
        self.probes = {}
        self.ready = False
        self.started_ok = False  # the startup probe passed (or there is none)
        self.state = "created"
        self.env = {}
        self.ever_ready = False
        self.readiness_lost = 0

    def start_probes(self, now):
        self.started = now
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            if self.spec.get(kind):
                self.probes[kind] = Probe(kind, self.spec[kind], now)
        self.started_ok = "startupProbe" not in self.probes
        self.ready = "readinessProbe" not in self.probes and self.started_ok


class Pod:
    def __init__(self, workload, name, template, ip, namespace):
        self.workload = workload  # (kind, name)
        self.name = name
        self.labels = dict(template.get("metadata", {}).get("labels") or {})
        self.annotations = dict(template.get("metadata", {}).get("annotations") or {})
        self.spec = template["spec"]
        self.ip = ip
        self.namespace = namespace
        self.uid = f"{rand(8)}-{rand(4)}-{rand(4)}-{rand(4)}-{rand(12)}"
        self.containers = []
        self.init_containers = []
        self.volumes = {}  # name -> (docker volume, read-only by nature)
        self.phase = "Pending"
        self.restarts = 0
        self.attempts = 0

    @property
    def kind(self):
        return self.workload[0]

    @property
    def ready(self):
        return self.phase == "Running" and all(c.ready for c in self.containers)

    def describe(self):
        return f"{self.kind}/{self.workload[1]} pod {self.name}"


class Cluster:
    def __init__(self, args, objects):
        self.args = args
        self.objects = objects
        self.namespace = args.namespace
        self.run_id = args.run_id or f"{os.getpid()}-{rand(4)}"
        self.prefix = f"opr-{self.run_id}"
        self.images = dict(i.split("=", 1) for i in args.image)
        self.pods = []
        self.lock = threading.RLock()
        self.failure = None
        self.stop = threading.Event()
        self.monitor_thread = None
        self.workdir = tempfile.mkdtemp(prefix="octollm-pods.")
        self.endpoints_dir = os.path.join(self.workdir, "endpoints")
        os.mkdir(self.endpoints_dir)
        os.chmod(self.endpoints_dir, 0o755)
        self.network = None
        self.subnet = None
        self.next_ip = 10
        self.services = {}  # name -> dict(spec, ip, forwarder)
        self.configmaps = {}
        self.secrets = {}
        self.probe_pool = []
        self.ingress = None
        self.prometheus = None
        self.dead_ip = None
        self.nproc = os.cpu_count() or 1

    # --- objects ---

    def of_kind(self, *kinds):
        return [o for o in self.objects if o.get("kind") in kinds]

    def component(self, obj):
        return (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/name", obj["metadata"]["name"])

    def local_image(self, image):
        repo = image_repo(image)
        if repo not in self.images:
            raise Failure(f"no local image for {image!r}: pass --image {repo}=LOCAL")
        return self.images[repo]

    # --- setup ---

    def create_network(self):
        for _ in range(40):
            subnet = ipaddress.ip_network(f"10.{random.randint(200, 254)}.{random.randint(0, 255)}.0/24")
            name = f"{self.prefix}-{secrets.token_hex(3)}-net"
            result = docker("network", "create", "--internal", "--subnet", str(subnet), "--label", f"{LABEL}={self.run_id}",
                            name, check=False)
            if result.returncode == 0:
                self.network, self.subnet = name, subnet
                self.dead_ip = self.alloc_ip()  # "kubernetes.default": an address nothing answers on
                log(f"network {name} ({subnet}, internal: no route out)")
                return
        raise Failure("no free /24 for the pod network under 10.200.0.0/13")

    def alloc_ip(self):
        ip = str(self.subnet.network_address + self.next_ip)
        self.next_ip += 1
        if self.next_ip > 250:
            raise Failure("the pod network is full")
        return ip

    def apply_overrides(self):
        for cm in self.of_kind("ConfigMap"):
            self.configmaps[cm["metadata"]["name"]] = dict(cm.get("data") or {})
            for key, value in (cm.get("binaryData") or {}).items():
                self.configmaps[cm["metadata"]["name"]][key] = base64.b64decode(value)
        shared = {e["configMapRef"]["name"] for t in self.pod_templates()
                  for c in t["spec"].get("containers", []) for e in c.get("envFrom") or [] if "configMapRef" in e}
        for item in self.args.set_config:
            key, value = item.split("=", 1)
            # The ConfigMaps holding the key, else every ConfigMap the containers take whole (envFrom).
            hit = [name for name, data in self.configmaps.items() if key in data] or sorted(shared & set(self.configmaps))
            if not hit:
                raise Failure(f"--set-config {key}: no ConfigMap holds that key or is read by envFrom")
            for name in hit:
                self.configmaps[name][key] = value
                log(f"test override: ConfigMap {name} {key}={value}")
        for secret in self.of_kind("Secret"):
            data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
            data.update(secret.get("stringData") or {})
            self.secrets[secret["metadata"]["name"]] = data
        if self.args.add_file:
            files = {}
            for item in self.args.add_file:
                dest, src = item.split("=", 1)
                files[dest] = open(src).read()
            self.added_files = files
            log(f"test override: {', '.join(files)} mounted read-only into every {self.args.app_image} container")
        else:
            self.added_files = {}

    def workloads(self, kinds):
        skip = set(self.args.skip)
        return [w for w in self.of_kind(*kinds) if self.component(w) not in skip and w["metadata"]["name"] not in skip]

    def pod_templates(self):
        return [w["spec"]["template"] for w in self.workloads(("Deployment", "StatefulSet", "DaemonSet", "Job"))]

    def referenced_secrets(self):
        """(secret, key, optional) for every secret reference in a workload we run."""
        refs = set()
        for template in self.pod_templates():
            spec = template["spec"]
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                for e in c.get("env") or []:
                    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        refs.add((ref["name"], ref["key"], bool(ref.get("optional"))))
                for e in c.get("envFrom") or []:
                    if "secretRef" in e:
                        refs.add((e["secretRef"]["name"], None, bool(e["secretRef"].get("optional"))))
            for v in spec.get("volumes") or []:
                if "secret" in v:
                    for item in v["secret"].get("items") or [{"key": None}]:
                        refs.add((v["secret"]["secretName"], item["key"], bool(v["secret"].get("optional"))))
        return refs

    def service_for(self, repo):
        """The Service in front of the workload whose container runs image `repo`, and that container."""
        for w in self.workloads(("StatefulSet", "Deployment")):
            template = w["spec"]["template"]
            for c in template["spec"]["containers"]:
                if image_repo(c["image"]) == repo:
                    labels = template["metadata"].get("labels") or {}
                    for svc in self.of_kind("Service"):
                        if matches(svc["spec"].get("selector"), labels):
                            return svc, c
        return None, None

    def make_test_secrets(self):
        """The test Secret the script makes: a value for every key the workloads read."""
        generated = {}
        pg_svc, pg = self.service_for("postgres")
        pg_password = "pw-" + secrets.token_hex(12)
        keys = None

        def pg_env(name, default):
            for e in (pg or {}).get("env") or []:
                if e["name"] == name:
                    if "value" in e:
                        return e["value"]
                    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        generated.setdefault(ref["name"], {})[ref["key"]] = pg_password
                        return pg_password
            return default

        def token_keys():
            nonlocal keys
            if keys is None:
                out = docker("run", "--rm", "--network", "none", self.local_image(self.args.app_image), "tokens", "keygen").stdout
                keys = dict(line.split("=", 1) for line in out.split() if "=" in line)
            return keys

        user = pg_env("POSTGRES_USER", "postgres")
        db = pg_env("POSTGRES_DB", user)
        pg_env("POSTGRES_PASSWORD", None)
        redis_svc, _ = self.service_for("redis")

        def value(secret, key):
            if key == "database-url" and pg_svc:
                port = pg_svc["spec"]["ports"][0]["port"]
                return f"postgres://{user}:{pg_password}@{pg_svc['metadata']['name']}:{port}/{db}"
            if key == "redis-url" and redis_svc:
                return f"redis://{redis_svc['metadata']['name']}:{redis_svc['spec']['ports'][0]['port']}/0"
            if key == "arm-registry-token":
                return "registry-" + secrets.token_hex(24)
            if key == "token-signing-key":
                return token_keys()["OCTOLLM_TOKEN_SIGNING_KEY"]
            if key == "token-public-keys":
                return token_keys()["OCTOLLM_TOKEN_PUBLIC_KEYS"]
            if key == "llm-api-key":
                return "sk-pod-runner-" + secrets.token_hex(8)
            return None

        for secret, key, optional in sorted(self.referenced_secrets(), key=str):
            if secret in self.secrets:
                continue
            if key is None:
                raise Failure(f"envFrom/volume of the whole Secret {secret}: the runner cannot tell its keys")
            if key in generated.get(secret, {}):
                continue
            v = value(secret, key)
            if v is None:
                if optional:
                    continue
                raise Failure(f"the runner does not know what to put in Secret {secret} key {key}")
            generated.setdefault(secret, {})[key] = v
        for secret, data in generated.items():
            self.secrets[secret] = data
            log(f"test Secret {secret}: {', '.join(sorted(data))} (generated)")

    def start_dns(self):
        """The cluster DNS at its own IP; the pods' resolver asks it through Docker's."""
        self.dns_dir = os.path.join(self.workdir, "dns")
        os.mkdir(self.dns_dir)
        os.chmod(self.dns_dir, 0o755)
        self.dns_ip = self.alloc_ip()
        self.write_endpoints()
        docker("run", "-d", "--name", f"{self.prefix}-dns", "--label", f"{LABEL}={self.run_id}",
               "--network", self.network, "--ip", self.dns_ip, "--read-only", "--user", "65534:65534",
               "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
               "-v", f"{NETWORK_SCRIPT}:/runner/pod_network.py:ro", "-v", f"{self.dns_dir}:/dns:ro",
               "--entrypoint", "python3", self.args.setup_image, "/runner/pod_network.py", "dns", "/dns/records")

    def start_services(self):
        """A forwarder at its own IP per Service with a cluster IP (the ClusterIP and kube-proxy)."""
        setup = self.args.setup_image
        for svc in self.of_kind("Service"):
            name = svc["metadata"]["name"]
            spec = svc["spec"]
            if spec.get("type") == "ExternalName":
                raise Failure(f"Service {name}: ExternalName is not modeled")
            for p in spec.get("ports", []):
                if p.get("protocol", "TCP") != "TCP":
                    raise Failure(f"Service {name}: {p.get('protocol')} ports are not modeled")
            headless = spec.get("clusterIP") == "None"
            entry = {"spec": spec, "name": name, "headless": headless, "ip": None}
            self.services[name] = entry
            if headless:
                continue
            entry["ip"] = self.alloc_ip()
            path = os.path.join(self.endpoints_dir, name)
            open(path, "w").close()
            os.chmod(path, 0o644)
            ports = [str(p["port"]) for p in spec["ports"]]
            docker("run", "-d", "--name", f"{self.prefix}-svc-{name}", "--label", f"{LABEL}={self.run_id}",
                   "--network", self.network, "--ip", entry["ip"], "--read-only", "--user", "65534:65534",
                   "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                   "-v", f"{NETWORK_SCRIPT}:/runner/pod_network.py:ro", "-v", f"{self.endpoints_dir}:/endpoints:ro",
                   "--entrypoint", "python3", setup, "/runner/pod_network.py", "forward", f"/endpoints/{name}", *ports)
        log(f"{len([s for s in self.services.values() if s['ip']])} Services: one forwarder each at its cluster IP")

    def service_env(self):
        """The variables Kubernetes injects for every Service of the namespace (enableServiceLinks)."""
        env = {"KUBERNETES_SERVICE_HOST": self.dead_ip, "KUBERNETES_SERVICE_PORT": "443",
               "KUBERNETES_SERVICE_PORT_HTTPS": "443", "KUBERNETES_PORT": f"tcp://{self.dead_ip}:443",
               "KUBERNETES_PORT_443_TCP": f"tcp://{self.dead_ip}:443", "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
               "KUBERNETES_PORT_443_TCP_PORT": "443", "KUBERNETES_PORT_443_TCP_ADDR": self.dead_ip}
        links = {}
        for name, svc in self.services.items():
            if not svc["ip"]:
                continue
            n, ip, ports = env_name(name), svc["ip"], svc["spec"]["ports"]
            links[f"{n}_SERVICE_HOST"] = ip
            links[f"{n}_SERVICE_PORT"] = str(ports[0]["port"])
            links[f"{n}_PORT"] = f"tcp://{ip}:{ports[0]['port']}"
            for p in ports:
                if p.get("name"):
                    links[f"{n}_SERVICE_PORT_{env_name(p['name'])}"] = str(p["port"])
                base = f"{n}_PORT_{p['port']}_TCP"
                links.update({base: f"tcp://{ip}:{p['port']}", f"{base}_PROTO": "tcp",
                              f"{base}_PORT": str(p["port"]), f"{base}_ADDR": ip})
        return env, links

    # --- pods ---

    def replicas(self, workload):
        kind, spec, name = workload["kind"], workload["spec"], workload["metadata"]["name"]
        if kind == "DaemonSet":
            return 1
        if kind == "Job":
            return 1
        count = spec.get("replicas")
        if count is None:
            hpas = [h for h in self.of_kind("HorizontalPodAutoscaler")
                    if h["spec"]["scaleTargetRef"]["name"] == name and h["spec"]["scaleTargetRef"]["kind"] == kind]
            count = hpas[0]["spec"].get("minReplicas", 1) if hpas else 1
        return min(count, self.args.max_replicas)

    def create_pods(self, workload):
        kind, name = workload["kind"], workload["metadata"]["name"]
        template = workload["spec"]["template"]
        count = self.replicas(workload)
        digest = hashlib.sha256(repr(template).encode()).hexdigest()[:10]
        pods = []
        for i in range(count):
            pod_name = {"StatefulSet": f"{name}-{i}", "Deployment": f"{name}-{digest}-{rand(5)}"}.get(kind, f"{name}-{rand(5)}")
            pod = Pod((kind, name), pod_name, template, self.alloc_ip(), self.namespace)
            if kind == "Job":
                pod.restart_policy = template["spec"].get("restartPolicy", "Never")
                pod.backoff_limit = workload["spec"].get("backoffLimit", 6)
            else:
                pod.restart_policy = "Always"
            if kind == "StatefulSet":
                pod.claims = [c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates") or []]
                pod.governing = workload["spec"].get("serviceName")
            else:
                pod.claims, pod.governing = [], None
            pods.append(pod)
        return pods

    def check_pod_spec(self, pod):
        spec = pod.spec
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(field):
                raise Failure(f"{pod.describe()}: {field} is not modeled")
        for c in spec.get("initContainers", []):
            if c.get("restartPolicy") == "Always":
                raise Failure(f"{pod.describe()}: sidecar init containers are not modeled")
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            for m in c.get("volumeMounts") or []:
                if m.get("subPath") or m.get("subPathExpr"):
                    raise Failure(f"{pod.describe()}: subPath mounts are not modeled")
            for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                if (c.get(kind) or {}).get("grpc"):
                    raise Failure(f"{pod.describe()}: gRPC probes are not modeled")

    def prepare_volumes(self, pod):
        """Docker volumes for the pod's volumes, owned and moded as the kubelet makes them."""
        ctx = pod.spec.get("securityContext") or {}
        fs_group = ctx.get("fsGroup")
        stage = os.path.join(self.workdir, "stage", pod.name)
        os.makedirs(stage)
        script, mounts = [], []
        declared = {v["name"]: v for v in pod.spec.get("volumes") or []}
        for claim in pod.claims:
            declared.setdefault(claim, {"name": claim, "persistentVolumeClaim": {"claimName": f"{claim}-{pod.name}"}})
        for i, (name, v) in enumerate(sorted(declared.items())):
            volume = f"{self.prefix}-{pod.name}-{name}"
            target = f"/v/{i}"
            if "emptyDir" in v:
                opts = []
                if (v["emptyDir"] or {}).get("medium") == "Memory":
                    opts = ["--opt", "type=tmpfs", "--opt", "device=tmpfs"]
                docker("volume", "create", "--label", f"{LABEL}={self.run_id}", *opts, volume)
                script.append(f"chmod 0777 {target}")
            elif "persistentVolumeClaim" in v:
                docker("volume", "create", "--label", f"{LABEL}={self.run_id}", volume)
                script.append(f"chmod 0755 {target}")
            elif "configMap" in v or "secret" in v:
                source = v.get("configMap") or v.get("secret")
                source_name = source.get("name") or source.get("secretName")
                store = self.configmaps if "configMap" in v else self.secrets
                data = store.get(source_name)
                if data is None:
                    if source.get("optional"):
                        data = {}
                    else:
                        raise Failure(f"{pod.describe()}: volume {name} needs {'ConfigMap' if 'configMap' in v else 'Secret'} {source_name}")
                items = source.get("items") or [{"key": k, "path": k} for k in data]
                default_mode = source.get("defaultMode", 0o644)
                os.makedirs(os.path.join(stage, name))
                for item in items:
                    if item["key"] not in data:
                        raise Failure(f"{pod.describe()}: volume {name}: {source_name} has no key {item['key']}")
                    path = os.path.join(stage, name, item["path"])
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    content = data[item["key"]]
                    with open(path, "wb") as f:
                        f.write(content if isinstance(content, bytes) else content.encode())
                    mode = item.get("mode", default_mode)
                    script.append(f"install -D -m {mode:o} /stage/{shlex.quote(name)}/{shlex.quote(item['path'])} "
                                  f"{target}/{shlex.quote(item['path'])}")
                docker("volume", "create", "--label", f"{LABEL}={self.run_id}", volume)
                script.append(f"chmod 0755 {target}")
                v = dict(v, _readonly=True)
            else:
                kind = next(k for k in v if k != "name")
                raise Failure(f"{pod.describe()}: {kind} volumes are not modeled")
            if fs_group is not None:
                script.append(f"chgrp -R {int(fs_group)} {target} && chmod -R g+rwX {target} && "
                              f"find {target} -type d -exec chmod g+s {{}} +")
            mounts += ["-v", f"{volume}:{target}"]
            pod.volumes[name] = (volume, bool(v.get("_readonly")))
        if script:
            docker("run", "--rm", "--network", "none", "--label", f"{LABEL}={self.run_id}", *mounts,
                   "-v", f"{stage}:/stage:ro", "--user", "0:0", "--entrypoint", "sh", self.args.setup_image,
                   "-ec", " && ".join(script))

    def container_env(self, pod, c):
        env = {}
        if pod.spec.get("enableServiceLinks", True):
            base, links = self.service_env()
            env.update(links)
        else:
            base, _ = self.service_env()
        env.update(base)
        for source in c.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                ref, store, what = source["configMapRef"], self.configmaps, "ConfigMap"
            else:
                ref, store, what = source["secretRef"], self.secrets, "Secret"
            data = store.get(ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise Failure(f"{pod.describe()} container {c['name']}: CreateContainerConfigError: {what} {ref['name']} not found")
            for k, v in data.items():
                if re.fullmatch(r"[-._a-zA-Z][-._a-zA-Z0-9]*", prefix + k):
                    env[prefix + k] = v if isinstance(v, str) else v.decode()
        defined = {}
        for e in c.get("env") or []:
            name = e["name"]
            if "value" in e or "valueFrom" not in e:
                value = expand(e.get("value", ""), {**env, **defined})
            else:
                value = self.value_from(pod, c, e["valueFrom"])
                if value is None:
                    continue
            defined[name] = value
        env.update(defined)
        if image_repo(c["image"]) == self.args.app_image:
            for key, value in self.args.drop_env_for(pod):
                env.pop(key, None)
        return env

    def value_from(self, pod, c, source):
        where = f"{pod.describe()} container {c['name']}"
        if "configMapKeyRef" in source or "secretKeyRef" in source:
            ref = source.get("configMapKeyRef") or source.get("secretKeyRef")
            store = self.configmaps if "configMapKeyRef" in source else self.secrets
            data = store.get(ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    return None
                raise Failure(f"{where}: CreateContainerConfigError: {ref['name']}/{ref['key']} not found")
            value = data[ref["key"]]
            return value if isinstance(value, str) else value.decode()
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            fields = {"metadata.name": pod.name, "metadata.namespace": pod.namespace, "metadata.uid": pod.uid,
                      "spec.nodeName": "pod-runner", "spec.serviceAccountName": pod.spec.get("serviceAccountName", "default"),
                      "status.podIP": pod.ip, "status.podIPs": pod.ip, "status.hostIP": str(self.subnet.network_address + 1),
                      "status.hostIPs": str(self.subnet.network_address + 1)}
            m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
            if m:
                return (pod.labels if m.group(1) == "labels" else pod.annotations).get(m.group(2), "")
            if path not in fields:
                raise Failure(f"{where}: fieldRef {path} is not modeled")
            return fields[path]
        if "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            target = c if not ref.get("containerName") else next(
                x for x in pod.spec["containers"] if x["name"] == ref["containerName"])
            side, res = ref["resource"].split(".", 1)
            amount = ((target.get("resources") or {}).get(side) or {}).get(res)
            if amount is None:
                amount = self.nproc if res == "cpu" else 8 * 2**30
            divisor = quantity(ref.get("divisor", "1"))
            return str(math.ceil(quantity(amount) / divisor))
        raise Failure(f"{where}: this valueFrom is not modeled: {source}")

    def docker_args(self, pod, c, init):
        pod_ctx = pod.spec.get("securityContext") or {}
        ctx = c.get("securityContext") or {}
        where = f"{pod.describe()} container {c['name']}"
        image = self.local_image(c["image"])
        args = ["--network", f"container:{self.prefix}-{pod.name}-pause", "--label", f"{LABEL}={self.run_id}",
                "--label", f"{LABEL}.pod={pod.name}"]
        uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        gid = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
        if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")):
            effective = uid
            if effective is None:
                user = docker("image", "inspect", "-f", "{{.Config.User}}", image).stdout.strip()
                effective = user.split(":")[0] if user else "0"
                if not effective.isdigit():
                    raise Failure(f"{where}: CreateContainerConfigError: image has non-numeric user {user!r}, "
                                  "cannot verify user is non-root")
            if int(effective) == 0:
                raise Failure(f"{where}: CreateContainerConfigError: container has runAsNonRoot and image will run as root")
        if uid is not None:
            # Without runAsGroup the runtime takes the user's group from the image, as Docker does.
            args += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
        elif gid is not None:
            raise Failure(f"{where}: runAsGroup without runAsUser is not modeled")
        for group in ([pod_ctx["fsGroup"]] if pod_ctx.get("fsGroup") is not None else []) + (pod_ctx.get("supplementalGroups") or []):
            args += ["--group-add", str(group)]
        if ctx.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        caps = ctx.get("capabilities") or {}
        for cap in caps.get("drop") or []:
            args += ["--cap-drop", cap]
        for cap in caps.get("add") or []:
            args += ["--cap-add", cap]
        if ctx.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        if ctx.get("privileged"):
            args.append("--privileged")
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp == "Unconfined":
            args += ["--security-opt", "seccomp=unconfined"]
        elif seccomp == "Localhost":
            raise Failure(f"{where}: Localhost seccomp profiles are not modeled")
        limits = (c.get("resources") or {}).get("limits") or {}
        if "memory" in limits:
            memory = str(int(quantity(limits["memory"])))
            args += ["--memory", memory, "--memory-swap", memory]
        if "cpu" in limits:
            args += ["--cpus", f"{min(quantity(limits['cpu']), float(self.nproc)):.2f}"]
        if c.get("workingDir"):
            args += ["--workdir", c["workingDir"]]
        for m in c.get("volumeMounts") or []:
            if m["name"] not in pod.volumes:
                raise Failure(f"{where}: CreateContainerConfigError: no volume {m['name']}")
            volume, always_ro = pod.volumes[m["name"]]
            ro = always_ro or m.get("readOnly", False)
            args += ["-v", f"{volume}:{m['mountPath']}{':ro' if ro else ''}"]
        if not init and image_repo(c["image"]) == self.args.app_image and self.added_files:
            files_dir = os.path.join(self.workdir, "files")
            if not os.path.isdir(files_dir):
                os.mkdir(files_dir)
                for dest, content in self.added_files.items():
                    path = os.path.join(files_dir, dest.strip("/").replace("/", "__"))
                    with open(path, "w") as f:
                        f.write(content)
                    os.chmod(path, 0o644)
            for dest in self.added_files:
                args += ["-v", f"{os.path.join(files_dir, dest.strip('/').replace('/', '__'))}:{dest}:ro"]
        env = self.container_env(pod, c)
        for k, v in sorted(env.items()):
            args += ["-e", f"{k}={v}"]
        command = [expand(x, env) for x in c.get("command") or []]
        cargs = [expand(x, env) for x in c.get("args") or []]
        if command:
            args += ["--entrypoint", command[0], image, *command[1:], *cargs]
        else:
            args += [image, *cargs]
        return args

    def start_pod(self, pod):
        self.check_pod_spec(pod)
        for c in pod.spec.get("containers", []):
            for hook in ("postStart", "preStop"):
                if (c.get("lifecycle") or {}).get(hook):
                    log(f"{pod.describe()}: {c['name']}'s {hook} hook is not modeled")
        self.prepare_volumes(pod)
        docker("run", "-d", "--name", f"{self.prefix}-{pod.name}-pause", "--label", f"{LABEL}={self.run_id}",
               "--network", self.network, "--ip", pod.ip, "--hostname", pod.name, "--dns", self.dns_ip,
               "--dns-search", f"{self.namespace}.{DNS_SUFFIX}", "--dns-search", DNS_SUFFIX,
               "--dns-search", "cluster.local", "--dns-option", "ndots:5",
               "--read-only", "--user", "65534:65534", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
               "--entrypoint", "sleep", self.args.setup_image, "infinity")
        for spec in pod.spec.get("initContainers", []):
            c = Container(pod, spec, f"{self.prefix}-{pod.name}-{spec['name']}", init=True)
            pod.init_containers.append(c)
            docker("run", "-d", "--name", c.docker_name, *self.docker_args(pod, spec, True))
            code = self.wait_exit(c.docker_name, pod)
            if code != 0:
                raise Failure(f"{pod.describe()}: init container {spec['name']} exited {code} "
                              "(Init:CrashLoopBackOff)", pod)
            c.state = "exited 0"
        for spec in pod.spec["containers"]:
            c = Container(pod, spec, f"{self.prefix}-{pod.name}-{spec['name']}")
            run_args = self.docker_args(pod, spec, False)
            c.env = {a.split("=", 1)[0]: a.split("=", 1)[1] for flag, a in zip(run_args, run_args[1:]) if flag == "-e"}
            docker("run", "-d", "--name", c.docker_name, *run_args)
            c.state = "running"
            c.start_probes(time.monotonic())
            pod.containers.append(c)
        pod.phase = "Running"
        pod.attempts = 1

    def wait_exit(self, name, pod, timeout=None):
        deadline = time.monotonic() + (timeout or self.args.timeout)
        while time.monotonic() < deadline:
            state = docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name).stdout.split()
            if state and state[0] in ("exited", "dead"):
                return int(state[1])
            self.check()
            time.sleep(0.2)
        raise Failure(f"{pod.describe()}: {name} did not finish within {timeout or self.args.timeout} s", pod)

    # --- the kubelet's loop ---

    def probe(self, container, probe):
        spec, pod = probe.spec, container.pod
        try:
            if "httpGet" in spec:
                import http.client
                get = spec["httpGet"]
                port = self.resolve_port(container.spec, get["port"])
                host = get.get("host") or pod.ip
                cls = http.client.HTTPSConnection if get.get("scheme", "HTTP").upper() == "HTTPS" else http.client.HTTPConnection
                kwargs = {"context": __import__("ssl")._create_unverified_context()} if cls is http.client.HTTPSConnection else {}
                conn = cls(host, port, timeout=probe.timeout, **kwargs)
                headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
                headers.setdefault("User-Agent", "kube-probe/1.28")
                conn.request("GET", get.get("path", "/"), headers=headers)
                status = conn.getresponse().status
                conn.close()
                return (200 <= status < 400), f"HTTP {status} from {get.get('path', '/')}"
            if "tcpSocket" in spec:
                port = self.resolve_port(container.spec, spec["tcpSocket"]["port"])
                with socket.create_connection((spec["tcpSocket"].get("host") or pod.ip, port), timeout=probe.timeout):
                    return True, "connected"
            if "exec" in spec:
                result = subprocess.run(["docker", "exec", container.docker_name, *spec["exec"]["command"]],
                                        capture_output=True, text=True, timeout=probe.timeout + 5)
                return result.returncode == 0, f"exit {result.returncode}: {(result.stdout + result.stderr).strip()[-200:]}"
        except Exception as e:  # every probe error is a failed probe, as for the kubelet
            return False, f"{type(e).__name__}: {e}"
        return False, "no handler"

    def pod_port(self, pod, port):
        """A Service's targetPort (a number, or a container port's name) on this pod; None if it has none."""
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for c in pod.spec["containers"]:
            for p in c.get("ports") or []:
                if p.get("name") == port:
                    return p["containerPort"]
        return None

    def resolve_port(self, cspec, port):
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in cspec.get("ports") or []:
            if p.get("name") == port:
                return p["containerPort"]
        raise Failure(f"port {port!r} names no port of container {cspec['name']}")

    def run_probe(self, container, probe):
        ok, message = self.probe(container, probe)
        with self.lock:
            probe.in_flight = False
            probe.due = time.monotonic() + probe.period
            if ok:
                probe.successes += 1
                probe.failures = 0
                probe.last_error = None
                probe.passed = True
            else:
                probe.failures += 1
                probe.successes = 0
                probe.last_error = message
            self.after_probe(container, probe, ok, message)

    def after_probe(self, c, probe, ok, message):
        if c.state != "running":
            return
        if probe.kind == "startupProbe":
            if ok and probe.successes >= 1:
                c.started_ok = True
                if "readinessProbe" not in c.probes:
                    c.ready = True
                del c.probes["startupProbe"]
                now = time.monotonic()
                for p in c.probes.values():
                    p.due = max(p.due, now)
            elif probe.failures >= probe.failure_threshold:
                self.fail(f"{c.pod.describe()} container {c.name}: startup probe failed {probe.failures} times "
                          f"({message}): the kubelet would restart it", c.pod)
        elif probe.kind == "livenessProbe":
            if not ok and probe.failures >= probe.failure_threshold:
                self.fail(f"{c.pod.describe()} container {c.name}: liveness probe failed {probe.failures} times "
                          f"({message}): the kubelet would restart it", c.pod)
        elif probe.kind == "readinessProbe":
            was = c.ready
            if ok and probe.successes >= probe.success_threshold:
                c.ready = True
                c.ever_ready = True
            elif not ok and probe.failures >= probe.failure_threshold:
                c.ready = False
            if was and not c.ready:
                c.readiness_lost += 1
                log(f"{c.pod.describe()} container {c.name}: not ready any more ({message})")
            if was != c.ready:
                self.write_endpoints()

    def fail(self, message, pod=None):
        if self.failure is None:
            self.failure = (message, pod)

    def check(self):
        if self.failure:
            message, pod = self.failure
            raise Failure(message, pod)

    def write_endpoints(self):
        """The Services' endpoints (ready pods) for the forwarders, and the cluster DNS records."""
        with self.lock:
            records = [f"kubernetes.default.{DNS_SUFFIX} {self.dead_ip}"]
            for name, svc in self.services.items():
                fqdn = f"{name}.{self.namespace}.{DNS_SUFFIX}"
                if svc["ip"]:
                    records.append(f"{fqdn} {svc['ip']}")
                for pod in self.pods:
                    if pod.ready and matches(svc["spec"].get("selector"), pod.labels):
                        if svc["headless"]:
                            records.append(f"{fqdn} {pod.ip}")
                        if pod.governing == name:
                            records.append(f"{pod.name}.{fqdn} {pod.ip}")
            path = os.path.join(self.dns_dir, "records")
            with open(path + ".tmp", "w") as f:
                f.write("\n".join(records) + "\n")
            os.chmod(path + ".tmp", 0o644)
            os.replace(path + ".tmp", path)
            for name, svc in self.services.items():
                if not svc["ip"]:
                    continue
                lines = []
                for pod in self.pods:
                    if pod.ready and matches(svc["spec"].get("selector"), pod.labels):
                        for p in svc["spec"]["ports"]:
                            target = self.pod_port(pod, p.get("targetPort", p["port"]))
                            if target is not None:
                                lines.append(f"{p['port']} {pod.ip}:{target}")
                path = os.path.join(self.endpoints_dir, name)
                tmp = path + ".tmp"
                with open(tmp, "w") as f:
                    f.write("\n".join(lines) + "\n")
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)

    def monitor(self):
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(max_workers=8)
        last_ps = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            with self.lock:
                pods = list(self.pods)
            for pod in pods:
                for c in pod.containers:
                    if c.state != "running":
                        continue
                    for probe in list(c.probes.values()):
                        gated = probe.kind != "startupProbe" and not c.started_ok
                        if probe.in_flight or gated or now < probe.due:
                            continue
                        probe.in_flight = True
                        pool.submit(self.run_probe, c, probe)
            if now - last_ps >= 1.0:
                last_ps = now
                try:
                    self.watch_exits(pods)
                except Exception as e:  # docker hiccups: next round
                    log(f"docker ps: {e}")
            self.stop.wait(0.2)
        pool.shutdown(wait=False, cancel_futures=True)

    def watch_exits(self, pods):
        out = docker("ps", "-a", "--filter", f"label={LABEL}={self.run_id}", "--format", "{{.Names}}\t{{.State}}").stdout
        states = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
        for pod in pods:
            for c in pod.containers:
                if c.state != "running":
                    continue
                state = states.get(c.docker_name)
                if state in (None, "running", "created"):
                    continue
                code = docker("inspect", "-f", "{{.State.ExitCode}}", c.docker_name).stdout.strip()
                with self.lock:
                    c.state, c.ready = f"exited {code}", False
                    if pod.kind == "Job":
                        self.job_exit(pod, c, int(code))
                    else:
                        self.fail(f"{pod.describe()} container {c.name} exited with code {code} "
                                  "(the kubelet would restart it: CrashLoopBackOff)", pod)
                    self.write_endpoints()

    def job_exit(self, pod, c, code):
        if code == 0:
            if all(x.state == "exited 0" for x in pod.containers):
                pod.phase = "Succeeded"
            return
        if pod.attempts > pod.backoff_limit:
            pod.phase = "Failed"
            self.fail(f"{pod.describe()}: container {c.name} exited {code}; backoffLimit {pod.backoff_limit} reached", pod)
            return
        delay = min(10, 2 ** (pod.attempts - 1))
        log(f"{pod.describe()}: container {c.name} exited {code}; retry {pod.attempts} of {pod.backoff_limit} in {delay} s")
        pod.attempts += 1
        pod.restarts += 1

        def restart():
            time.sleep(delay)
            if self.stop.is_set():
                return
            docker("start", c.docker_name, check=False)
            with self.lock:
                c.state = "running"
                c.start_probes(time.monotonic())
        threading.Thread(target=restart, daemon=True).start()

    # --- phases ---

    def wait_ready(self, pods, what):
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            self.check()
            with self.lock:
                waiting = [p for p in pods if not p.ready]
            if not waiting:
                return
            time.sleep(0.2)
        lines = []
        for p in waiting:
            for c in p.containers:
                probe = c.probes.get("readinessProbe") or c.probes.get("startupProbe")
                lines.append(f"{p.describe()} container {c.name}: {c.state}, "
                             f"last probe: {probe.last_error if probe else 'none'}")
        raise Failure(f"{what}: not ready within {self.args.timeout} s:\n  " + "\n  ".join(lines), waiting[0])

    def wait_alive(self):
        """Every liveness probe has passed once: a container whose probe keeps failing would be
        restarted, so the run is not over before each has been seen alive (or failed)."""
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            self.check()
            with self.lock:
                waiting = [(p, c) for p in self.pods for c in p.containers if c.state == "running"
                           and "livenessProbe" in c.probes and not c.probes["livenessProbe"].passed]
            if not waiting:
                return
            time.sleep(0.2)
        p, c = waiting[0]
        raise Failure(f"{p.describe()} container {c.name}: liveness probe never passed within {self.args.timeout} s "
                      f"({c.probes['livenessProbe'].last_error})", p)

    def run_phase(self, kinds, title):
        started = time.monotonic()
        workloads = self.workloads(kinds)
        if not workloads:
            return
        all_pods = []
        for w in workloads:
            pods = self.create_pods(w)
            for pod in pods:
                with self.lock:
                    self.pods.append(pod)
                self.start_pod(pod)
                if w["kind"] == "StatefulSet" and w["spec"].get("podManagementPolicy", "OrderedReady") == "OrderedReady":
                    self.wait_ready([pod], pod.describe())
            all_pods += pods
        if "Job" in kinds:
            deadline = time.monotonic() + self.args.timeout
            while any(p.phase != "Succeeded" for p in all_pods):
                self.check()
                if time.monotonic() > deadline:
                    raise Failure(f"Jobs not complete within {self.args.timeout} s", all_pods[0])
                time.sleep(0.2)
            log(f"{title}: {', '.join(p.describe() for p in all_pods)} completed ({time.monotonic() - started:.1f} s)")
            for pod in all_pods:
                for c in pod.containers:
                    out = docker("logs", "--tail", "12", c.docker_name, check=False)
                    for line in (out.stdout + out.stderr).strip().splitlines():
                        print(f"      {pod.name} | {line[:300]}", flush=True)
            return
        self.wait_ready(all_pods, title)
        self.write_endpoints()
        log(f"{title}: {len(all_pods)} pods of {len(workloads)} workloads ready ({time.monotonic() - started:.1f} s)")

    # --- the Ingress and Prometheus stand-ins ---

    def start_ingress(self):
        ingresses = self.of_kind("Ingress")
        if not ingresses:
            return None
        backends = set()
        for ing in ingresses:
            spec = ing["spec"]
            if spec.get("defaultBackend"):
                backends.add(self.ingress_backend(spec["defaultBackend"]))
            for rule in spec.get("rules") or []:
                for path in (rule.get("http") or {}).get("paths") or []:
                    backends.add(self.ingress_backend(path["backend"]))
        if len(backends) != 1:
            raise Failure(f"the Ingress stand-in forwards to one backend; the rules name {sorted(backends)}")
        service, port = backends.pop()
        svc = self.services.get(service)
        if not svc or not svc["ip"]:
            raise Failure(f"the Ingress routes to Service {service}, which the render does not have")
        ip = self.alloc_ip()
        path = os.path.join(self.endpoints_dir, "_ingress")
        with open(path, "w") as f:
            f.write(f"80 {svc['ip']}:{port}\n")
        os.chmod(path, 0o644)
        docker("run", "-d", "--name", f"{self.prefix}-ingress", "--label", f"{LABEL}={self.run_id}",
               "--network", self.network, "--ip", ip, "--read-only", "--user", "65534:65534", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges",
               "-v", f"{NETWORK_SCRIPT}:/runner/pod_network.py:ro", "-v", f"{self.endpoints_dir}:/endpoints:ro",
               "--entrypoint", "python3", self.args.setup_image, "/runner/pod_network.py", "forward", "/endpoints/_ingress", "80")
        log(f"Ingress: http://{ip}/ → Service {service} port {port} (the ingress controller's route)")
        self.ingress = f"http://{ip}"
        return self.ingress

    def ingress_backend(self, backend):
        service = backend["service"]
        port = service["port"].get("number")
        if port is None:
            svc = self.services.get(service["name"])
            named = [p["port"] for p in (svc["spec"]["ports"] if svc else []) if p.get("name") == service["port"]["name"]]
            if not named:
                raise Failure(f"the Ingress names port {service['port']['name']!r} of Service {service['name']}, which has none")
            port = named[0]
        return service["name"], port

    def start_prometheus(self):
        monitors = self.of_kind("ServiceMonitor")
        if not monitors or not self.args.prometheus_image:
            return None
        import json
        jobs = []
        for sm in monitors:
            for svc_obj in self.of_kind("Service"):
                labels = svc_obj["metadata"].get("labels") or {}
                if not matches(sm["spec"]["selector"], labels):
                    continue
                svc = svc_obj["metadata"]["name"]
                job = labels.get(sm["spec"]["jobLabel"], svc) if sm["spec"].get("jobLabel") else svc
                for i, ep in enumerate(sm["spec"]["endpoints"]):
                    port = next((p for p in svc_obj["spec"]["ports"] if p.get("name") == ep.get("port")), None)
                    if port is None:
                        raise Failure(f"ServiceMonitor {sm['metadata']['name']}: Service {svc} has no port {ep.get('port')!r}")
                    targets = []
                    for pod in self.pods:
                        target = self.pod_port(pod, port.get("targetPort", port["port"]))
                        if matches(svc_obj["spec"].get("selector"), pod.labels) and target is not None:
                            targets.append({"targets": [f"{pod.ip}:{target}"],
                                            "labels": {"job": job, "namespace": self.namespace, "service": svc,
                                                       "pod": pod.name, "endpoint": ep.get("port")}})
                    jobs.append({"job_name": f"serviceMonitor/{self.namespace}/{sm['metadata']['name']}/{i}/{svc}",
                                 "metrics_path": ep.get("path", "/metrics"),
                                 "scrape_interval": ep.get("interval", "30s"),
                                 "static_configs": targets})
        config_dir = os.path.join(self.workdir, "prometheus")
        os.mkdir(config_dir)
        path = os.path.join(config_dir, "prometheus.yml")
        with open(path, "w") as f:
            json.dump({"global": {"scrape_interval": "15s"}, "scrape_configs": jobs}, f)
        os.chmod(config_dir, 0o755)
        os.chmod(path, 0o644)
        ip = self.alloc_ip()
        docker("run", "-d", "--name", f"{self.prefix}-prometheus", "--label", f"{LABEL}={self.run_id}",
               "--network", self.network, "--ip", ip, "--read-only", "--user", "65534:65534", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges", "--tmpfs", "/prometheus:mode=1777",
               "-v", f"{config_dir}:/etc/pod-runner:ro", self.args.prometheus_image,
               "--config.file=/etc/pod-runner/prometheus.yml", "--storage.tsdb.path=/prometheus",
               "--web.listen-address=:9090")
        url = f"http://{ip}:9090"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                import urllib.request
                urllib.request.urlopen(f"{url}/-/ready", timeout=2)
                break
            except Exception:
                time.sleep(0.3)
        else:
            raise Failure("the Prometheus stand-in did not become ready")
        log(f"Prometheus stand-in: {url}, {len(jobs)} scrape jobs from {len(monitors)} ServiceMonitors")
        self.prometheus = url
        return url

    # --- reporting and cleanup ---

    def logs(self, pod, lines=40):
        for c in pod.init_containers + pod.containers:
            out = docker("logs", "--tail", str(lines), c.docker_name, check=False)
            print(f"---- {pod.describe()} container {c.name} ({c.state}), last {lines} log lines:", file=sys.stderr)
            print((out.stdout + out.stderr).rstrip() or "(no output)", file=sys.stderr)

    def warnings(self, lines=4):
        """For a failure no one pod is blamed for: each pod's last distinct warnings and errors."""
        for pod in self.pods:
            for c in pod.containers:
                out = docker("logs", "--tail", "300", c.docker_name, check=False)
                found = {}
                for line in (out.stdout + out.stderr).splitlines():
                    if re.search(r'"level":"(WARN|ERROR)"|\b(WARN|ERROR|error|panicked)\b', line):
                        message = re.search(r'"message":"([^"]*)"', line)
                        key = message.group(1) if message else re.sub(r"^\S+\s+", "", line)[:80]
                        found.pop(key, None)
                        found[key] = line[:600]
                if found:
                    print(f"---- {pod.describe()} container {c.name}, last distinct warnings and errors:", file=sys.stderr)
                    print("\n".join(list(found.values())[-lines:]), file=sys.stderr)

    def summary(self):
        for pod in self.pods:
            states = ", ".join(f"{c.name} {c.state}{' ready' if c.ready else ''}" for c in pod.containers)
            print(f"  {pod.describe()} {pod.ip}: {pod.phase}, {states}", file=sys.stderr)

    def cleanup(self):
        self.stop.set()
        if self.monitor_thread:
            self.monitor_thread.join(timeout=5)
        cleanup(self.run_id)
        shutil.rmtree(self.workdir, ignore_errors=True)


def cleanup(run_id):
    """Removes every container, volume and network labelled with this run. The containers that
    share a pause container's network go first: removing a holder while its members still run
    can leave an endpoint the engine never lets go of, and the network with it."""
    listed = docker("ps", "-a", "--filter", f"label={LABEL}={run_id}", "--format", "{{.ID}} {{.Names}}",
                    check=False).stdout.split("\n")
    rows = [line.split(" ", 1) for line in listed if " " in line]
    members = [cid for cid, name in rows if not name.endswith("-pause")]
    holders = [cid for cid, name in rows if name.endswith("-pause")]
    for ids in (members, holders):
        if ids:
            docker("rm", "-f", "-v", *ids, check=False, timeout=300)
    volumes = docker("volume", "ls", "-q", "--filter", f"label={LABEL}={run_id}", check=False).stdout.split()
    if volumes:
        docker("volume", "rm", "-f", *volumes, check=False)
    for _ in range(10):
        networks = docker("network", "ls", "-q", "--filter", f"label={LABEL}={run_id}", check=False).stdout.split()
        if not networks or docker("network", "rm", *networks, check=False).returncode == 0:
            return
        time.sleep(1)
    print(f"pods: warning: network(s) {' '.join(networks)} of this run could not be removed", file=sys.stderr)


# --- the OctoLLM smoke test ---

def http_json(method, url, body=None, key=None, timeout=30):
    import json
    import urllib.error
    import urllib.request
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    if key:
        request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text


def smoke(cluster, args):
    orchestrators = [p for p in cluster.pods if p.labels.get("app.kubernetes.io/name") == "orchestrator" and p.ready]
    if not orchestrators:
        raise Failure("no ready orchestrator pod to make an API key in")
    orchestrator = orchestrators[0]
    # As `kubectl exec deploy/orchestrator -- octollm keys create …`: in the container, with its env.
    made = docker("exec", orchestrator.containers[0].docker_name, "octollm", "keys", "create", "--name", "smoke",
                  "--scopes", "admin", check=False)
    key = made.stdout.strip().splitlines()[-1] if made.returncode == 0 and made.stdout.strip() else ""
    if not key.startswith("octo_"):
        raise Failure(f"octollm keys create in {orchestrator.name} failed: {made.stderr.strip()[-400:]}", orchestrator)
    log(f"API key {key[:17]}… made in {orchestrator.name} (octollm keys create --scopes admin)")
    entry = cluster.ingress
    if not entry:
        raise Failure("the render has no Ingress: no public entry to test")
    env = dict(os.environ, OCTOLLM_API_KEY=key)
    log(f"scripts/smoke-tests.sh {entry} {cluster.prometheus}")
    process = subprocess.Popen(["bash", args.smoke_script, entry, cluster.prometheus or "http://127.0.0.1:9"], env=env)
    while process.poll() is None:
        if cluster.failure:
            process.kill()
            cluster.check()
        time.sleep(0.2)
    if process.returncode != 0:
        raise Failure(f"scripts/smoke-tests.sh failed (exit {process.returncode})")
    cluster.check()
    qdrant_holds_vectors(cluster)


def qdrant_holds_vectors(cluster):
    """With a retriever on Qdrant, the smoke test's document left its vectors there."""
    pods = [p for p in cluster.pods if p.labels.get("app.kubernetes.io/name") == "qdrant"]
    service = next((s for s in cluster.services.values() if s["ip"] and pods and
                    matches(s["spec"].get("selector"), pods[0].labels)), None)
    retriever = retriever_pod(cluster)
    if not service or not retriever or not any(c.env.get("QDRANT_URL") for c in retriever.containers):
        log("the retriever keeps its vectors in PostgreSQL here: Qdrant's part is not checked")
        return
    port = next(p["port"] for p in service["spec"]["ports"] if p.get("name") == "http")
    base = f"http://{service['ip']}:{port}"
    status, body = http_json("GET", f"{base}/collections")
    names = [c["name"] for c in (body.get("result") or {}).get("collections", [])] if status == 200 else []
    points = 0
    for name in names:
        _, info = http_json("GET", f"{base}/collections/{name}")
        points += ((info or {}).get("result") or {}).get("points_count") or 0
    if points < 1:
        raise Failure(f"Qdrant holds no vectors after the smoke test's ingestion (collections {names})", retriever_pod(cluster))
    log(f"Qdrant (Service {service['name']}) holds the vectors: {points} points in {', '.join(names)}")


def retriever_pod(cluster):
    return next((p for p in cluster.pods if p.labels.get("app.kubernetes.io/name") == "retriever-arm"), None)


# --- entry points ---

def run(args):
    import yaml
    objects = [o for o in yaml.safe_load_all(open(args.rendered)) if o]
    namespaces = {o["metadata"].get("namespace") for o in objects if o.get("metadata", {}).get("namespace")}
    if not args.namespace:
        args.namespace = namespaces.pop() if len(namespaces) == 1 else "default"
    drops = {}
    for item in args.drop_env:
        component, name = item.split(":", 1)
        drops.setdefault(component, []).append(name)
        log(f"test override: {name} left out of {component}'s environment")
    args.drop_env_for = lambda pod: [(n, None) for n in drops.get(pod.labels.get("app.kubernetes.io/name"), [])]
    for component in args.skip:
        log(f"SKIP: {component} is not run")
    cluster = Cluster(args, objects)
    started = time.monotonic()
    kinds = {}
    for o in objects:
        kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
    log(f"{args.rendered}: {len(objects)} objects ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), "
        f"namespace {args.namespace}")
    interrupted = []

    def on_signal(signum, _frame):
        interrupted.append(signum)
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    try:
        used = {cluster.local_image(c["image"]) for t in cluster.pod_templates()
                for c in t["spec"].get("containers", []) + t["spec"].get("initContainers", [])}
        for image in sorted(used | {args.setup_image} | ({args.prometheus_image} if args.prometheus_image else set())):
            if docker("image", "inspect", image, check=False).returncode != 0:
                raise Failure(f"local image {image} does not exist")
        for w in cluster.of_kind("CronJob"):
            log(f"CronJob {w['metadata']['name']}: not run (schedules are not modeled)")
        cluster.apply_overrides()
        cluster.create_network()
        cluster.make_test_secrets()
        cluster.start_services()
        cluster.start_dns()
        cluster.monitor_thread = threading.Thread(target=cluster.monitor, daemon=True)
        cluster.monitor_thread.start()
        cluster.run_phase(("StatefulSet",), "StatefulSets")
        cluster.run_phase(("Job",), "Jobs")
        cluster.run_phase(("Deployment", "DaemonSet"), "Deployments and DaemonSets")
        cluster.start_ingress()
        cluster.start_prometheus()
        if args.smoke:
            smoke(cluster, args)
        cluster.wait_alive()
        cluster.check()
        with cluster.lock:
            unready = [p for p in cluster.pods if p.kind != "Job" and not p.ready]
            lost = [(p, c) for p in cluster.pods for c in p.containers if c.readiness_lost]
        if unready:
            raise Failure(f"not ready at the end: {', '.join(p.describe() for p in unready)}", unready[0])
        for p, c in lost:
            log(f"note: {p.describe()} container {c.name} lost readiness {c.readiness_lost} times")
        log(f"ok: {len(cluster.pods)} pods ran, none restarted ({time.monotonic() - started:.0f} s)")
        return 0
    except Failure as e:
        message = e.args[0]
        pod = e.args[1] if len(e.args) > 1 else None
        print(f"pods: FAIL: {message}", file=sys.stderr)
        if pod is not None:
            cluster.logs(pod)
        else:
            cluster.warnings()
        print("pods: state of every pod:", file=sys.stderr)
        cluster.summary()
        return 1
    except KeyboardInterrupt:
        print(f"pods: interrupted ({interrupted[0] if interrupted else 'SIGINT'})", file=sys.stderr)
        return 130
    finally:
        if args.hold:
            log(f"holding the pods for {args.hold:.0f} s (--hold); Ingress {cluster.ingress}, Prometheus {cluster.prometheus}")
            try:
                time.sleep(args.hold)
            except KeyboardInterrupt:
                pass
        cluster.cleanup()


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "cleanup":
        cleanup(sys.argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the rendered manifests")
    r.add_argument("rendered")
    r.add_argument("--namespace", help="for objects without one (default: the render's one namespace)")
    r.add_argument("--image", action="append", default=[], metavar="REPO=LOCAL",
                   help="the local image for a rendered image repository (every image needs one)")
    r.add_argument("--setup-image", required=True, help="a Debian image with python3 for pause, volume setup, forwarders")
    r.add_argument("--app-image", default="octollm/octollm", help="the OctoLLM image repository (keygen, added files)")
    r.add_argument("--prometheus-image", help="a Prometheus image for the ServiceMonitors (else none)")
    r.add_argument("--set-config", action="append", default=[], metavar="KEY=VALUE",
                   help="test override of a ConfigMap value (every ConfigMap holding KEY)")
    r.add_argument("--add-file", action="append", default=[], metavar="DEST=SRC",
                   help="test file mounted read-only into every app container")
    r.add_argument("--drop-env", action="append", default=[], metavar="COMPONENT:NAME",
                   help="leave a variable out of a component's app containers")
    r.add_argument("--skip", action="append", default=[], metavar="COMPONENT", help="a workload not to run")
    r.add_argument("--run-id", help="labels every Docker object (pod_runner.py cleanup RUN_ID removes them)")
    r.add_argument("--max-replicas", type=int, default=2)
    r.add_argument("--timeout", type=float, default=150, help="seconds a phase may take")
    r.add_argument("--smoke", action="store_true", help="the OctoLLM smoke test through the Ingress")
    r.add_argument("--hold", type=float, default=0, help="keep everything running this many seconds at the end (debugging)")
    r.add_argument("--smoke-script", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "smoke-tests.sh"))
    args = parser.parse_args()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
