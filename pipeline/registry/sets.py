"""Engine sets as OCI artifacts (issue 11): the mapping between a set and an artifact.

One set is one OCI artifact tagged with the set tag: its ``manifest.json`` is the config
blob (media type ``CONFIG_MEDIA_TYPE``), every file of the set is one layer titled with
its path inside the set, and set-level facts are manifest annotations (``ANNOTATIONS``),
so ``engines fleet status`` and the matching in ``engines pull`` read only manifests and
config blobs (``remote_sets``): no layer moves before a set is chosen. Blobs are
content-addressed, so a push first asks the registry (HEAD) and uploads only the blobs it lacks.

A pull stages the layers under ``models/engines/.staging/``, checks every layer digest and
every sha256 of manifest.json, and only then swaps the set into ``models/engines/<tag>/``
(engine_set.swap_in); anything that goes wrong leaves ``models/engines/`` as it was.
The transport (requests, login, errors) is ``registry.client``'s.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.engine_set import MANIFEST, REPORT, EngineSet, load_set, set_lock, swap_in
from pipeline.errors import PipelineError
from pipeline.fsutil import sha256_file, write_bytes_atomic
from pipeline.manifest import ManifestError, SetManifest
from pipeline.registry.client import (
    OCI_MANIFEST,
    OUTAGE_CODES,
    TITLE,
    RegistryUnreachable,
    Remote,
    TamperedError,
    is_outage,
    short_reason,
    tampered,
    upload_streaming,
)
from pipeline.status import Status

CONFIG_MEDIA_TYPE = "application/vnd.engines.set.manifest.v1+json"
LAYER_MEDIA_TYPES = {"engine": "application/vnd.engines.engine.v1", "plan": "application/vnd.engines.plan.v1",
                     "passthrough": "application/vnd.engines.passthrough.v1", "report": "text/markdown"}
P = "org.engines."
ANNOTATIONS = {  # key -> what it holds (docs/fleet.md "Registry" lists the same)
    P + "set.tag": "the set tag, e.g. trt-10.13.3.9-sm90",
    P + "backend": "tensorrt or tensorrt-rtx",
    P + "tensorrt.version": "full TensorRT (for RTX) version that built the engines",
    P + "compute-caps": "target compute capabilities, comma separated (8.6,8.9)",
    P + "gpu.product": "GPU model that built the set (absent for TensorRT for RTX ahead-of-time builds)",
    P + "cuda.version": "CUDA version of the building host's driver",
    P + "driver.min": "driver of the building host: older drivers are not proven",
    P + "demo": "true when the set holds demo weights",
    P + "verification": "passed, pending (not yet run on a GPU), mixed (passed on one GPU model, failed on "
                        "another) or failed",
    P + "models": "model names, comma separated",
    "org.opencontainers.image.created": "when the set was last updated (manifest.json)",
}
VERIFICATION = {Status.OK: Status.PASSED, Status.PENDING: Status.PENDING, Status.FAILED: Status.FAILED,
                Status.MIXED: Status.MIXED}   # set status -> the annotation's word


@dataclass
class RemoteSet(EngineSet):
    """A set known only by its manifest.json (the config blob) and its OCI manifest."""
    oci: dict = field(default_factory=dict)
    config_digest: str = ""


def remote_sets(remote: Remote, only: list[str] | None = None) -> tuple[list[RemoteSet], list[str]]:
    """Every engine set of the repository (manifests and config blobs only, no layer), and
    one line per tag that is not one."""
    found, others = [], []
    for tag in only if only is not None else remote.tags():
        oci = remote.oci_manifest(tag)
        if oci is None:
            others.append(f"{tag}: no such tag in {remote.ref}")
            continue
        cfg = oci.get("config") or {}
        if cfg.get("mediaType") != CONFIG_MEDIA_TYPE:
            others.append(f"{tag}: not an engine set (config {cfg.get('mediaType')})")
            continue
        try:  # the same checks as a local set: schema, types, tag, no path outside the set
            manifest = SetManifest.from_dict(json.loads(remote.blob(cfg["digest"], f"the manifest.json of {tag}")),
                                             f"{remote.ref}:{tag} manifest.json")
        except TamperedError:
            others.append(f"{tag}: its manifest.json does not match its digest (corrupt or tampered with)")
            continue
        except (ValueError, ManifestError) as err:
            others.append(f"{tag}: damaged manifest.json ({getattr(err, 'what', err)})")
            continue
        if manifest.tag != tag:   # the local folder is named by the tag: both must agree
            others.append(f"{tag}: its manifest.json is for set {manifest.tag!r}, not {tag} (re-tagged by hand?)")
            continue
        found.append(RemoteSet(Path(remote.ref) / tag, manifest, oci=oci, config_digest=cfg["digest"]))
    return found, others


# ------------------------------------------------------------------ push
def set_files(s: EngineSet) -> list[tuple[str, str]]:
    """(relative path, kind) of every file a set carries besides manifest.json, sorted."""
    out = {}
    for e in s.models.values():
        if e.status == Status.OK:
            out.update({getattr(e, k): k for k in ("engine", "plan")})
    out.update({p.file: "passthrough" for p in s.manifest.passthrough.values()})
    if (s.path / REPORT).is_file():
        out[REPORT] = "report"
    return sorted(out.items())


def annotations(s: EngineSet) -> dict[str, str]:
    m, gpu = s.manifest, s.manifest.gpu or {}
    values = {"set.tag": s.tag, "backend": m.backend, "tensorrt.version": m.trt_version,
              "compute-caps": ",".join(m.targets), "gpu.product": gpu.get("name"),
              "cuda.version": gpu.get("cuda"), "driver.min": gpu.get("driver"),
              "demo": "true" if s.demo else "false", "verification": VERIFICATION[s.status()],
              "models": ",".join(sorted(s.models))}
    out = {P + k: str(v) for k, v in values.items() if v not in (None, "")}
    if m.updated or m.created:
        out["org.opencontainers.image.created"] = str(m.updated or m.created)
    return out


def push(s: EngineSet, remote: Remote, on_line=lambda _m: None) -> dict:
    """Upload the set as one artifact tagged ``s.tag``; blobs the registry has are not sent."""
    import oras.oci
    problems = s.check_files()
    if problems:
        raise PipelineError(f"the set {s.tag} differs from its manifest, so it is not pushed", file=s.path,
                            details=problems, fix="rebuild the set (`engines run`); never edit files inside a set")
    container = remote.container(s.tag)
    reg = remote.reg
    layers, sent, kept, sent_bytes = [], [], [], 0

    def upload(path: Path, layer: dict, name: str) -> None:
        nonlocal sent_bytes
        if remote.call(f"checking {name}", reg.blob_exists, layer, container):
            kept.append(name)
            return
        on_line(f"uploading {name} ({layer['size'] / 2**20:.1f} MiB)")
        r = remote.call(f"uploading {name}", upload_streaming, reg, path, container, layer)
        remote.call(f"uploading {name}", reg._check_200_response, r)
        remote.uploads += 1
        sent.append(name)
        sent_bytes += layer["size"]

    for rel, kind in set_files(s):
        layer = oras.oci.NewLayer(str(s.path / rel), media_type=LAYER_MEDIA_TYPES[kind])
        layer["annotations"] = {TITLE: rel}
        upload(s.path / rel, layer, rel)
        layers.append(layer)
    config, _ = oras.oci.ManifestConfig(str(s.path / MANIFEST), CONFIG_MEDIA_TYPE)
    upload(s.path / MANIFEST, config, MANIFEST)
    manifest = {**oras.oci.NewManifest(), "config": config, "layers": layers, "annotations": annotations(s)}
    # the registry names a manifest by the sha256 of the bytes sent: requests' json= encoding
    digest = "sha256:" + hashlib.sha256(json.dumps(manifest).encode()).hexdigest()
    head = remote.call(f"reading {s.tag}", reg.do_request, f"{reg.prefix}://{container.manifest_url()}", "HEAD",
                       headers={"Accept": OCI_MANIFEST})
    tagged = head.status_code == 200 and head.headers.get("Docker-Content-Digest") == digest
    if not tagged:
        r = remote.call(f"tagging {s.tag}", reg.upload_manifest, manifest, container)
        remote.call(f"tagging {s.tag}", reg._check_200_response, r)
        digest = r.headers.get("Docker-Content-Digest") or digest
    return {"ok": True, "tag": s.tag, "ref": f"{remote.ref}:{s.tag}", "digest": digest, "uploaded": sent,
            "already_there": kept, "uploaded_bytes": sent_bytes, "tag_changed": not tagged}



# ------------------------------------------------------------------ pull
def _safe_rel(rel: str) -> bool:
    parts = Path(rel).parts
    return bool(parts) and not Path(rel).is_absolute() and ".." not in parts and not parts[0].startswith(".")


def fetch(remote: Remote, rs: RemoteSet, engines_dir: Path, on_line=lambda _m: None, *,
          lock_timeout: float | None = None, on_wait=None) -> tuple[Path, bool]:
    """Download ``rs`` into ``engines_dir/<tag>`` atomically, every digest and sha256 checked;
    (path, downloaded) where downloaded is False when an identical copy was already here.
    While another process holds the set's lock the wait is announced (``on_wait``, default
    ``on_line``) with its pid; after ``lock_timeout`` seconds (None: no limit) LockTimeout."""
    final = engines_dir / rs.tag
    staging_root = engines_dir / ".staging"
    with set_lock(final, timeout=lock_timeout, log=on_wait or on_line):
        here = final / MANIFEST
        if here.is_file() and "sha256:" + sha256_file(here) == rs.config_digest:
            local = load_set(final)
            if local is not None and not local.check_files():
                on_line(f"{rs.tag} is already here, identical to {remote.ref}:{rs.tag}")
                return final, False
        for stale in staging_root.glob(f"{rs.tag}.*"):   # an earlier pull that was killed (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        stage = staging_root / f"{rs.tag}.{os.getpid()}"
        stage.mkdir(parents=True)
        try:
            _download(remote, rs, stage, on_line)
            swap_in(stage, final)
        finally:
            shutil.rmtree(stage, ignore_errors=True)     # the failed download, or the old generation
    return final, True


def expected_layers(remote: Remote, rs: RemoteSet) -> list[tuple[str, str, int]]:
    """(title, digest, size) of every layer, checked before anything is downloaded: the titles
    are exactly the set's files as its manifest.json lists them (report.md may be among
    them), each once. An artifact with more layers, a repeated title or a title that is no
    file of the set (``yolo/evil.sh``, the folder ``yolo``) is refused, naming the title."""
    where = f"{remote.ref}:{rs.tag}"
    fix = (f"push {rs.tag} again from a host that holds an intact copy (`engines push --set {rs.tag} {remote.ref}`); "
           "an artifact carries exactly the files its manifest.json lists, never more")
    wanted = {rel for rel, _ in set_files(rs) if rel != REPORT}
    optional = {REPORT}   # the verification report travels when the pushing host had one
    folders = {str(parent) for rel in wanted for parent in Path(rel).parents if str(parent) != "."}
    layers = rs.oci.get("layers")
    if layers is None:
        layers = []
    if not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
        raise PipelineError(f"{where} has a malformed OCI manifest (its layers are not a list of descriptors); "
                            "nothing was changed in models/engines", fix=fix)
    if len(layers) > len(wanted) + len(optional):
        raise PipelineError(f"{where} has {len(layers)} layers, but its manifest.json lists {len(wanted)} files "
                            f"(and {REPORT} may come with them): the artifact carries files that are not the set's; "
                            "nothing was downloaded and nothing was changed in models/engines", fix=fix)
    out, seen, bad = [], set(), []
    for layer in layers:
        annotations = layer.get("annotations")
        rel = annotations.get(TITLE) if isinstance(annotations, dict) else None
        digest, size = layer.get("digest"), layer.get("size", 0)
        if not isinstance(rel, str) or not rel:
            bad.append(f"a layer without a title ({TITLE}), digest {str(digest)[:19]}…")
        elif rel in seen:
            bad.append(f"{rel!r}: the title comes twice")
        elif rel in folders:
            bad.append(f"{rel!r}: titled like the folder {rel}/ of the set, not a file of it (a malformed "
                       "artifact: the registry's copy is at fault, not this disk)")
        elif rel not in wanted and rel not in optional:
            bad.append(f"{rel!r}: not a file of the set (its manifest.json does not list it)")
        elif not isinstance(digest, str) or not digest.startswith("sha256:"):
            bad.append(f"{rel!r}: the layer has no sha256 digest")
        if isinstance(rel, str):
            seen.add(rel)
        out.append((rel, digest, size if isinstance(size, int) and not isinstance(size, bool) else 0))
    if bad:
        raise PipelineError(f"{where} holds layers that are not the files of the set; the artifact is refused, nothing "
                            f"was downloaded and nothing was changed in models/engines (first: {bad[0]})",
                            details=bad[:20] + ([f"… and {len(bad) - 20} more"] if len(bad) > 20 else []), fix=fix)
    missing = sorted(wanted - seen)
    if missing:
        raise PipelineError(f"{where} lacks files its manifest lists; nothing was changed in models/engines",
                            details=missing, fix=f"push {rs.tag} again with `engines push`")
    return out


def _download(remote: Remote, rs: RemoteSet, stage: Path, on_line) -> None:
    import requests
    container = remote.container(rs.tag)
    for rel, digest, size in expected_layers(remote, rs):   # nothing moves before every title is checked
        if not _safe_rel(rel):   # the manifest's own paths are checked on reading it: a second guard
            raise PipelineError(f"{remote.ref}:{rs.tag} holds a layer with an unsafe path {rel!r}; nothing was "
                                "changed in models/engines", fix="push the set again with `engines push`")
        on_line(f"downloading {rel} ({size / 2**20:.1f} MiB)")
        out = stage / rel
        try:
            remote.reg.download_blob(container, digest, str(out))
        except requests.exceptions.RequestException as exc:
            code = getattr(exc.response, "status_code", None)
            why = (f"HTTP {code}: blob {digest[:19]}… missing or unreadable in the registry" if code
                   else f"lost the connection: {short_reason(exc)}")
            error = RegistryUnreachable if (code in OUTAGE_CODES or not code and is_outage(exc)) else PipelineError
            raise error(f"the pull of {rs.tag} was interrupted: {rel} could not be downloaded ({why}); "
                        "nothing was changed in models/engines",
                        fix=f"run the same command again; if it fails the same way, push {rs.tag} again from "
                            "a host that holds it") from None
        if "sha256:" + sha256_file(out) != digest:
            raise tampered(remote, rel, digest, rs.tag)
    write_bytes_atomic(stage / MANIFEST, remote.blob(rs.config_digest, f"the manifest.json of {rs.tag}"))
    problems = EngineSet(stage, rs.manifest).check_files()
    if problems:
        raise PipelineError(f"the files of {remote.ref}:{rs.tag} differ from its manifest.json; nothing was changed "
                            "in models/engines", details=problems,
                            fix=f"rebuild {rs.tag} and push it again (`engines push --set {rs.tag} {remote.ref}`)")

