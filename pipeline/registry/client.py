"""OCI transport for engine sets (issue 11), through the ``oras`` Python SDK: one repository of
one registry (``Remote``), its reference checked, its login read from the Docker config, every
request bounded by ENGINES_REGISTRY_TIMEOUT, every HTTP or connection failure turned into a
paragraph for people (``RegistryUnreachable`` when the registry is down, so ``resolve --from``
may fall back on the sets on disk). Blobs and manifests only: what an engine set looks like as
an artifact is ``registry.sets``'. oras and requests load only when a request is made.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from pipeline.errors import PipelineError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TITLE = "org.opencontainers.image.title"


def _fix_access(ref: str) -> str:
    return (f"check that the registry in {ref} runs and is reachable from here; a registry without TLS needs "
            "--plain-http, one with a self-signed certificate --insecure")


class RegistryUnreachable(PipelineError):
    """The registry did not answer (refused, unknown host, timed out, connection lost):
    ``resolve --from`` may fall back on the sets already on disk."""


TIMEOUT_ENV = "ENGINES_REGISTRY_TIMEOUT"
TIMEOUT_RULE = (f"{TIMEOUT_ENV} is the number of seconds a registry may stay silent before the command gives up: "
                "a number greater than 0 (below 1 counts as 1 s), default 60")


def request_timeout() -> tuple[float, float]:
    """(connect, read) seconds for every registry request: a registry that stops answering
    fails the command instead of hanging the deploy step (ENGINES_REGISTRY_TIMEOUT: read).
    A value that is no positive number of seconds is an error naming the variable."""
    import math
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or not raw.strip():
        read = 60.0
    else:
        try:
            read = float(raw)
        except ValueError:
            read = math.nan
        if not math.isfinite(read) or read <= 0:   # abc, nan, inf, 0, -5: never a silent default or "no time"
            raise PipelineError(f"{TIMEOUT_ENV}={raw!r} is not a usable timeout: {TIMEOUT_RULE}",
                                fix=f"set {TIMEOUT_ENV} to a number of seconds, e.g. `export {TIMEOUT_ENV}=60`, "
                                    f"or unset it for the default")
        read = max(read, 1.0)
    return min(15.0, read), read


OUTAGE_CODES = (502, 503, 504)   # a proxy or load balancer in front of a registry that is down


def is_outage(exc: Exception) -> bool:
    """The registry is down or unreachable (worth falling back on local sets), as opposed
    to a TLS, auth, URL or data problem (never hidden)."""
    import requests
    e = requests.exceptions
    return not isinstance(exc, e.SSLError) and isinstance(exc, (e.ConnectionError, e.Timeout, e.ChunkedEncodingError))


def _unavailable(what: str) -> RegistryUnreachable:
    return RegistryUnreachable(what, fix="run the same command again once the registry answers")


# OCI distribution spec: a repository name is path components of lower-case letters and digits
# separated by '.', '_', '__' or dashes; the registry host a DNS name or IPv4 address with an optional port
REPO_NAME = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*")
REGISTRY_HOST = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*"
                           r"[a-zA-Z0-9])?))*(?::[0-9]{1,5})?")
REFERENCE_EXAMPLE = "registry.example.com/engines/yolo or 127.0.0.1:5000/engines"


def reference_problem(ref: str) -> str | None:
    """Why ``ref`` is no OCI repository reference ``host[:port]/path`` (no tag, no digest), or None."""
    if not isinstance(ref, str) or not ref:
        return "it is empty"
    host, _, repo = ref.partition("/")
    if "@" in ref:
        return "a digest (@sha256:…) does not belong in it: the set tag is chosen by the command"
    if not repo:
        return "it names no repository after the registry host"
    if not REGISTRY_HOST.fullmatch(host) or not ("." in host or ":" in host or host == "localhost"):
        return (f"{host!r} is not a registry host (a DNS name with a dot, an IP address, or localhost, "
                "with an optional :PORT)")
    if ":" in repo:
        return "a tag (:TAG) does not belong in it: the set tag is chosen by the command"
    if len(ref) > 255:
        return f"it is {len(ref)} characters long (at most 255)"
    if not REPO_NAME.fullmatch(repo):
        bad = next((c for c in repo.split("/") if not REPO_NAME.fullmatch(c)), repo)
        return (f"the path component {bad!r} is not allowed (lower-case letters and digits, separated by '.', "
                "'_', '__' or '-')")
    return None


class Remote:
    """One repository of one registry: ``host[:port]/path/repo``."""

    def __init__(self, ref: str, *, plain_http: bool = False, insecure: bool = False):
        host, _, repo = ref.partition("/")
        problem = reference_problem(ref)
        if problem:
            raise PipelineError(f"cannot read the registry reference {ref!r}: {problem}",
                                fix="write it as REGISTRY/REPO, e.g. 127.0.0.1:5000/engines or ghcr.io/acme/engines "
                                    "(no tag: pick the set with --set TAG)")
        self.ref, self.host, self.repo = ref, host, repo
        self.plain_http, self.insecure = plain_http, insecure
        self.uploads = 0          # blobs actually uploaded (a no-op push leaves it at 0)
        self.timeout = request_timeout()   # a bad ENGINES_REGISTRY_TIMEOUT fails before any request
        self._reg = None

    # -------------------------------------------------------------- connection
    @property
    def reg(self):
        if self._reg is None:
            self._reg = self._connect()
        return self._reg

    def docker_config(self) -> str:
        d = os.environ.get("DOCKER_CONFIG")
        return str(Path(d) / "config.json") if d else os.path.expanduser("~/.docker/config.json")

    def _connect(self):
        import oras.provider
        import requests

        class _Registry(oras.provider.Registry):
            # errors keep their response (oras raises a bare ValueError); no blind retries with
            # back-off (oras waits minutes on a refused connection): every failure is reported
            def _check_200_response(self, response):
                if response.status_code not in (200, 201, 202):
                    raise _HTTPError(response)

            def do_request(self, *args, **kwargs):
                return oras.provider.Registry.do_request.__wrapped__(self, *args, **kwargs)

        class _TimeoutAdapter(requests.adapters.HTTPAdapter):
            # oras passes no timeout: without one a registry that accepts and then stalls hangs us
            def send(self, request, **kw):
                if kw.get("timeout") is None:
                    kw["timeout"] = timeout
                return super().send(request, **kw)

        timeout = self.timeout
        scheme = "http" if self.plain_http else "https"
        try:
            probe = requests.get(f"{scheme}://{self.host}/v2/", timeout=timeout, verify=not self.insecure)
        except requests.exceptions.SSLError as exc:
            raise PipelineError(f"TLS with the registry {self.host} failed ({short_reason(exc)})",
                                fix="for a registry without TLS pass --plain-http; for a self-signed certificate "
                                    "pass --insecure (or install its CA)") from None
        except requests.exceptions.RequestException as exc:
            raise (RegistryUnreachable if is_outage(exc) else PipelineError)(
                f"cannot reach the registry {self.host} ({short_reason(exc)})", fix=_fix_access(self.ref)) from None
        if probe.status_code in OUTAGE_CODES:
            raise _unavailable(f"the registry {self.host} is unavailable (GET /v2/: HTTP {probe.status_code})")
        challenge = probe.headers.get("Www-Authenticate", "")
        basic = probe.status_code == 401 and challenge.lower().startswith("basic")
        reg = _Registry(hostname=self.host, insecure=self.plain_http, tls_verify=not self.insecure,
                        auth_backend="basic" if basic else "token")
        for prefix in ("http://", "https://"):
            reg.session.mount(prefix, _TimeoutAdapter())
        config = self.docker_config()
        # our own reading of the one Docker config docker would use (oras' reader raises bare
        # JSONDecodeErrors and also reads ~/.docker/config.json when $DOCKER_CONFIG names another)
        reg.auth._auth_config = self.auth_config()
        if probe.status_code == 401:
            self._check_helper(reg.auth._auth_config)
        try:
            reg.auth.load_configs(self.container())
        except (ValueError, KeyError, TypeError) as exc:   # a helper that answered, but not with credentials
            raise PipelineError(f"the Docker credential helper for {self.host} named in {config} did not answer "
                                f"with credentials ({type(exc).__name__}: {short_reason(exc)})", file=config,
                                fix=f"check it with `echo {self.host} | docker-credential-HELPER get`, or log in "
                                    f"again with `docker login {self.host}`") from None
        if basic:  # credentials from the Docker config, sent up front (no 401 round trip per request)
            creds = getattr(reg.auth, "_basic_auth", None)
            if not creds:
                raise self.unauthorised(f"the registry {self.host} asks for a login and {config} holds none for it")
            reg.session.headers["Authorization"] = f"Basic {creds}"
            check = self.call("logging in", reg.do_request, f"{reg.prefix}://{self.host}/v2/", "GET")
            if check.status_code in (401, 403):
                raise self.unauthorised(f"the registry {self.host} refused the credentials for it in {config} "
                                        f"(HTTP {check.status_code})")
        elif probe.status_code not in (200, 401):
            raise PipelineError(f"{self.host} does not answer as an OCI registry (GET /v2/: HTTP {probe.status_code})",
                                fix=_fix_access(self.ref))
        return reg

    def auth_config(self) -> dict:
        """auths, credsStore and credHelpers of the Docker config; a file that is not a Docker
        config (not JSON, not UTF-8, the wrong shape) is an error naming it."""
        path = self.docker_config()
        empty = {"auths": {}, "credsStore": None, "credHelpers": {}}
        fix = (f"fix {path} (it must be JSON like {{\"auths\": {{\"{self.host}\": {{\"auth\": \"...\"}}}}}}), or move "
               f"it away and log in again with `docker login {self.host}`, which writes a new one")
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            return empty
        except OSError as exc:
            raise PipelineError(f"cannot read the Docker config ({exc.strerror or exc})", file=path,
                                fix="make it readable by this user, or point $DOCKER_CONFIG at another folder") from None
        if not raw.strip():
            return empty
        try:
            cfg = json.loads(raw.decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            raise PipelineError(f"the Docker config is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                                f"{exc.start})", file=path, fix=fix) from None
        except ValueError as exc:
            raise PipelineError(f"the Docker config is not valid JSON ({getattr(exc, 'msg', exc)} at line "
                                f"{getattr(exc, 'lineno', '?')}, column {getattr(exc, 'colno', '?')})", file=path,
                                fix=fix) from None
        auths, store, helpers = ((cfg.get("auths") or {}, cfg.get("credsStore"), cfg.get("credHelpers") or {})
                                 if isinstance(cfg, dict) else (None, None, None))
        if not isinstance(auths, dict) or not all(isinstance(v, dict) for v in auths.values()) \
                or not isinstance(helpers, dict) or not all(isinstance(v, str) for v in helpers.values()) \
                or not isinstance(store, (str, type(None))):
            raise PipelineError("the Docker config is not one: `auths` must map hosts to {\"auth\": ...}, "
                                "`credHelpers` hosts to helper names and `credsStore` be a helper name", file=path,
                                fix=fix)
        return {"auths": dict(auths), "credsStore": store or None, "credHelpers": dict(helpers)}

    def _check_helper(self, cfg: dict) -> None:
        """The registry asks for a login: a credential helper the config names must exist here."""
        inline = any((cfg["auths"].get(h) or {}).get("auth") for h in _host_spellings(self.host))
        key, helper = next(((f'credHelpers["{h}"]', cfg["credHelpers"][h]) for h in _host_spellings(self.host)
                            if cfg["credHelpers"].get(h)), ("credsStore", cfg["credsStore"]))
        if helper and not (inline and key == "credsStore") and shutil.which(f"docker-credential-{helper}") is None:
            raise PipelineError(f"the Docker config names the credential helper {helper!r} ({key}) for "
                                f"{self.host}, but docker-credential-{helper} is not installed here (not on PATH)",
                                file=self.docker_config(),
                                fix=f"install docker-credential-{helper} (or add its folder to PATH), or remove "
                                    f"{key} from the config and log in with `docker login {self.host}` so the "
                                    "credentials are stored in the file itself")

    def unauthorised(self, what: str) -> PipelineError:
        return PipelineError(what, file=self.docker_config(),
                             fix=f"log in with `docker login {self.host}` (or `oras login`): the credentials go to "
                                 "~/.docker/config.json ($DOCKER_CONFIG/config.json), where engines reads them")

    def container(self, tag: str = "latest"):
        import oras.container
        return oras.container.Container(f"{self.repo}:{tag}", registry=self.host)

    def call(self, what: str, fn, *args, **kwargs):
        """Run one SDK call; turn HTTP and connection failures into errors for people."""
        import requests
        try:
            return fn(*args, **kwargs)
        except _HTTPError as exc:
            code = exc.response.status_code
            if code in (401, 403):
                raise self.unauthorised(f"the registry {self.host} refused {what} (HTTP {code}: credentials "
                                        "missing, wrong, or without access to " + self.repo + ")") from None
            if code in OUTAGE_CODES:
                raise _unavailable(f"{what} failed: the registry {self.host} is unavailable (HTTP {code})") from None
            if code == 404 and _oci_code(exc.response) == "NAME_UNKNOWN":
                raise PipelineError(f"the repository {self.repo} does not exist in {self.host}",
                                    fix=f"check the name, or push a set first: `engines push {self.ref}`") from None
            raise PipelineError(f"{what} failed at {self.host}: HTTP {code} {_oci_message(exc.response)}",
                                fix=_fix_access(self.ref)) from None
        except ValueError as exc:   # oras reports some failures (upload sessions, auth) as ValueError
            raise PipelineError(f"{what} failed at {self.host}: {short_reason(exc)}", fix=_fix_access(self.ref)) from None
        except requests.exceptions.RequestException as exc:
            raise (RegistryUnreachable if is_outage(exc) else PipelineError)(
                f"{what} failed: lost the connection to {self.host} ({short_reason(exc)})",
                fix="run the same command again once the registry answers (a registry that stalls is given up "
                    f"after ENGINES_REGISTRY_TIMEOUT seconds, now {self.timeout[1]:g})") from None

    # -------------------------------------------------------------- reading
    def tags(self) -> list[str]:
        return sorted(self.call(f"listing the tags of {self.repo}", self.reg.get_tags, self.container()))

    def oci_manifest(self, tag: str) -> dict | None:
        """The OCI manifest of ``tag``; None when the tag does not exist."""
        url = f"{self.reg.prefix}://{self.container(tag).manifest_url()}"
        r = self.call(f"reading {tag}", self.reg.do_request, url, "GET", headers={"Accept": OCI_MANIFEST})
        if r.status_code == 404:
            return None
        self.call(f"reading {tag}", self.reg._check_200_response, r)
        return r.json()

    def blob(self, digest: str, what: str) -> bytes:
        r = self.call(what, self.reg.get_blob, self.container(), digest)
        self.call(what, self.reg._check_200_response, r)
        if "sha256:" + hashlib.sha256(r.content).hexdigest() != digest:
            raise tampered(self, what, digest)
        return r.content


def _host_spellings(host: str) -> list[str]:
    """The keys a Docker config may file ``host`` under."""
    return [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/"]


class _HTTPError(Exception):
    def __init__(self, response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _oci_code(response) -> str:
    try:
        return (response.json().get("errors") or [{}])[0].get("code", "")
    except (ValueError, AttributeError, IndexError):
        return ""


def _oci_message(response) -> str:
    try:
        return "; ".join(e.get("message", "") for e in response.json().get("errors") or [])
    except (ValueError, AttributeError):
        return response.reason or ""


def short_reason(exc: Exception) -> str:
    text = str(exc)
    for hint in ("Connection refused", "Name or service not known", "timed out", "No route to host"):
        if hint in text:
            return hint.lower()
    return text[:200]


class TamperedError(PipelineError):
    """A blob whose bytes do not match its digest."""


def tampered(remote: Remote, what: str, digest: str, tag: str = "TAG") -> PipelineError:
    return TamperedError(f"{what} from {remote.ref} does not match its digest {digest[:19]}… (corrupt or tampered "
                         "with in the registry); nothing was changed in models/engines",
                         fix=f"push the set again from a host that holds an intact copy (`engines push --set {tag} "
                             f"{remote.ref}`), then pull again")


def upload_streaming(reg, path: Path, container, layer: dict):
    """A monolithic blob upload (OCI distribution spec: POST an upload session, then PUT the
    bytes with ?digest=) that streams the file; oras' own put_upload reads it whole into memory."""
    import oras.utils
    start = reg.do_request(f"{reg.prefix}://{container.upload_blob_url()}", "POST", headers={"Content-Length": "0"})
    reg._check_200_response(start)
    session = reg._get_location(start, container)
    if not session:
        raise ValueError("the registry opened an upload session without a Location")
    url = oras.utils.append_url_params(session, {"digest": layer["digest"]})
    with open(path, "rb") as fd:   # requests sends a file object in blocks
        return reg.do_request(url, "PUT", data=fd, headers={"Content-Length": str(layer["size"]),
                                                              "Content-Type": "application/octet-stream"})


