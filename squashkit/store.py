"""Where bundles are kept: a local directory, or any fsspec URL (``s3://bucket/prefix`` through s3fs).

A bundle is always built and verified on this machine first (``bundle.writing``); only a
verified bundle is published, and only a bundle checked against its manifest is used:

- ``publish``: every file but the manifest is uploaded, streamed in blocks (flat memory); each
  is then read back from the store and its sha256 compared with the manifest's; the manifest
  is written last. A bundle without a manifest is never listed, so an upload that fails or is
  cut leaves nothing that looks like a bundle (and what it wrote is removed when possible).
  The local bundle stays until the upload is proved, and is kept when it is not.
- ``fetched``: the manifest is read, every file it lists is downloaded (streamed) into a private
  local directory and hashed on the way; a file missing or differing refuses the bundle
  before anything is changed. The rest of squashkit then reads the local copy.
- ``bundles`` and ``remove``: what ``cleanup`` lists and deletes (the manifest first, so a
  removal cut short leaves no half bundle that is listed).

Credentials come from where the filesystem package looks (for S3: the AWS environment
variables, ``AWS_PROFILE``, ``~/.aws``, instance roles) or from ``[tool.squashkit.storage]``,
which names the environment variables that hold them; they never reach a log or a message.
Journals, locks, lineage, saved migration files and the safety bundles a run makes stay in
the local state directory (``config.backup_dir``): a run writes them before each step acts.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from squashkit import bundle, progress
from squashkit.config import Config, Storage, is_url
from squashkit.errors import BadInput, Interrupted, OperationFailed, SquashkitError, UndoIncomplete, first_line

# A connection cut mid-upload also fails a task of s3fs's event loop that nobody awaits; asyncio
# would print its traceback at exit ("Task exception was never retrieved") after squashkit's own
# one-line error has said what happened. That report is squashkit's to give, once.
logging.getLogger("asyncio").addHandler(logging.NullHandler())
logging.getLogger("asyncio").propagate = False

BLOCK = 8 << 20  # bytes per read and per uploaded part: memory stays flat whatever the file's size
DOWNLOADS = ".downloads"


def location(config: Config, output: str | Path | None = None) -> str | Path:
    """Where bundles go: ``output`` (``backup --output``), else the configured backup_dir (its URL)."""
    if output is not None:
        return str(output) if is_url(output) else Path(output)
    return config.backup_url or config.backup_dir


def filesystem(url: str, storage: Storage):
    """(fsspec filesystem, path inside it) for ``url``, with the configured storage options."""
    try:
        import fsspec
        from fsspec.core import url_to_fs
    except ImportError:  # pragma: no cover - fsspec is a dependency
        raise BadInput("fsspec is not installed: pip install squashkit[s3]") from None
    protocol = url.split("://", 1)[0]
    options: dict = dict(storage.options)
    if protocol in ("s3", "s3a"):
        options.update(_s3_options(storage))
    try:
        fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as exc:
        extra = " (pip install 'squashkit[s3]')" if protocol in ("s3", "s3a") else ""
        raise BadInput(f"cannot open {protocol}:// URLs: {first_line(exc)}{extra}") from None
    fs, path = url_to_fs(url, **options)
    return fs, path.rstrip("/")


def _s3_options(storage: Storage) -> dict:
    client: dict = {}
    options: dict = {
        "skip_instance_cache": True,
        # Fail in seconds on an unreachable server instead of retrying for minutes.
        "config_kwargs": {"connect_timeout": 10, "read_timeout": 60, "retries": {"max_attempts": 2}},
    }
    if storage.endpoint_url:
        options["endpoint_url"] = storage.endpoint_url
    if storage.profile:
        options["profile"] = storage.profile
    if storage.region:
        client["region_name"] = storage.region
    for key, option in (("access_key_id_env", "key"), ("secret_access_key_env", "secret"), ("session_token_env", "token")):
        value = storage.secret(key)
        if value is not None:
            options[option] = value
    if client:
        options["client_kwargs"] = client
    return options


@contextlib.contextmanager
def _reaching(url: str, what: str) -> Iterator[None]:
    """Every error of the store as one line that says what to do, naming no secret."""
    try:
        yield
    except SquashkitError:
        raise
    except PermissionError as exc:
        raise BadInput(f"{what} {url}: access denied ({_reason(exc)}); check the credentials "
                       "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or storage.*_env)") from None
    except FileNotFoundError as exc:
        if "bucket" in str(exc).lower():
            raise BadInput(f"{what} {url}: the bucket does not exist ({_reason(exc)})") from None
        raise BadInput(f"{what} {url}: not found ({_reason(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - botocore, aiohttp and OS errors alike: the server is not reachable
        name = type(exc).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError", "ProfileNotFound"):
            raise BadInput(f"{what} {url}: {_reason(exc)} (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)") from None
        raise OperationFailed(f"{what} {url}: {name}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    return first_line(exc)[:300]


def _join(*parts: str) -> str:
    return "/".join(part.strip("/") for part in parts if part)


def bundle_url(root_url: str, name: str) -> str:
    return f"{root_url.rstrip('/')}/{name}"


def require_reachable(root_url: str, storage: Storage) -> None:
    """Refuse, before a backup is written, a store that cannot be reached: wrong credentials, a
    bucket that does not exist, no server there."""
    fs, root = filesystem(root_url, storage)
    bucket = root.split("/", 1)[0]
    with _reaching(root_url, "cannot reach"):
        try:
            fs.info(bucket if root_url.startswith(("s3://", "s3a://", "gs://", "gcs://")) else root)
        except FileNotFoundError:
            if root_url.startswith(("s3://", "s3a://", "gs://", "gcs://")):
                raise FileNotFoundError(f"no bucket {bucket!r}") from None
            # A prefix that does not exist yet is fine: the first upload creates it.


def publish(local: Path, root_url: str, storage: Storage, *, log: Callable[[str], None]) -> str:
    """Upload the verified bundle ``local`` under ``root_url``; return its URL. Raises, keeping
    ``local``, when it cannot be proved to be in the store byte for byte."""
    manifest = bundle.read_manifest(local)
    fs, root = filesystem(root_url, storage)
    with _reaching(root_url, "cannot write to"):
        name = local.name
        suffix = 1
        while fs.exists(_join(root, name, bundle.MANIFEST)):
            suffix += 1
            name = f"{local.name}-{suffix}"
    url = bundle_url(root_url, name)
    files = [p for p in sorted(local.rglob("*")) if p.is_file() and p.name != bundle.MANIFEST]
    total = sum(p.stat().st_size for p in files)
    done = 0
    try:
        with _reaching(url, "uploading to"):
            # 1. Every file but the manifest, streamed.
            for path in files:
                relative = path.relative_to(local).as_posix()
                with path.open("rb") as source, fs.open(_join(root, name, relative), "wb", block_size=BLOCK) as target:
                    while block := source.read(BLOCK):
                        target.write(block)
                        done += len(block)
                        progress.update(f"upload of {name}", done, total, "bytes")
            # 2. Read back what the store holds: the manifest's sha256 of each.
            for path in files:
                relative = path.relative_to(local).as_posix()
                expected = manifest.files.get(relative) or bundle.sha256(path)
                if _remote_sha256(fs, _join(root, name, relative)) != expected:
                    raise OperationFailed(f"{relative} reads back from the store with another sha256")
            # 3. The manifest last: only now is it a bundle there.
            fs.pipe_file(_join(root, name, bundle.MANIFEST), (local / bundle.MANIFEST).read_bytes())
    except (SquashkitError, KeyboardInterrupt) as exc:
        with contextlib.suppress(Exception):
            fs.rm(_join(root, name), recursive=True)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise type(exc)(f"{exc}; nothing was published, the verified bundle stays at {local}") from None
    log(f"uploaded {len(files) + 1} files ({total} bytes) to {url}, each read back and checked against the manifest")
    return url


def _remote_sha256(fs, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb", block_size=BLOCK) as source:
        while block := source.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _split(url: str) -> tuple[str, str | None]:
    """(bundle URL, file inside it or None): ``s3://b/p/dev-X/db.json`` names a file of a bundle."""
    last = url.rstrip("/").rsplit("/", 1)
    # By what a fixture is called: an environment's name may hold dots too ("prod.eu-2026...").
    if len(last) == 2 and last[1].removesuffix(".age").removesuffix(".gz").endswith(".json"):
        return last[0], last[1]
    return url.rstrip("/"), None


def fetch(url: str, config: Config, *, log: Callable[[str], None]) -> Path:
    """Download the bundle ``url`` into the local state directory, checking every file against
    its manifest on the way; return the local copy. Refuses (nothing changed) a bundle whose
    manifest is missing or damaged, or a file that is missing or differs."""
    fs, path = filesystem(url, config.storage)
    name = path.rsplit("/", 1)[-1]
    downloads = config.backup_dir / DOWNLOADS
    bundle.prepare_output_dir(downloads)
    with _reaching(url, "cannot read"):
        if not fs.exists(_join(path, bundle.MANIFEST)):
            raise BadInput(f"{url} is not a squashkit bundle (no {bundle.MANIFEST}): nothing was changed")
        raw = fs.cat_file(_join(path, bundle.MANIFEST))
    local = downloads / name
    shutil.rmtree(local, ignore_errors=True)
    with bundle.writing(downloads, name) as partial:
        (partial / bundle.MANIFEST).write_bytes(raw)
        manifest = bundle.read_manifest(partial)
        extra = [n for n in ("history.json",) if n not in manifest.files]
        total, done = 0, 0
        with _reaching(url, "downloading"):
            sizes = {relative: fs.size(_join(path, relative)) for relative in manifest.files if fs.exists(_join(path, relative))}
            total = sum(sizes.values())
            for relative, expected in manifest.files.items():
                if relative not in sizes:
                    raise BadInput(f"bundle {url} is damaged: {relative} is missing from the store; nothing was changed")
                destination = partial / relative
                destination.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                digest = hashlib.sha256()
                with fs.open(_join(path, relative), "rb", block_size=BLOCK) as source, destination.open("wb") as target:
                    while block := source.read(BLOCK):
                        digest.update(block)
                        target.write(block)
                        done += len(block)
                        progress.update(f"download of {name}", done, total, "bytes")
                if digest.hexdigest() != expected:
                    raise BadInput(f"bundle {url} is damaged: {relative} does not match its sha256 in the manifest; "
                                   "nothing was changed (use another bundle)")
            for relative in extra:  # written after the bundle (a squash's saved rows): not hashed
                if fs.exists(_join(path, relative)):
                    (partial / relative).write_bytes(fs.cat_file(_join(path, relative)))
    local = bundle.finished_path(partial)
    log(f"downloaded {url} ({total} bytes), every file matching its manifest")
    return local


@contextlib.contextmanager
def local_bundle(config: Config, path: str | Path, *, log: Callable[[str], None]) -> Iterator[Path]:
    """``path`` as a local path: a URL is fetched first (checked against its manifest), and its
    copy removed after the block, unless the run stopped half way (``resume`` needs it)."""
    if not is_url(path):
        yield Path(path)
        return
    bundle_part, inside = _split(str(path))
    local = fetch(bundle_part, config, log=log)
    try:
        yield local / inside if inside else local
    except (Interrupted, UndoIncomplete, KeyboardInterrupt):
        raise  # the journal stays open and names this copy: resume reads it
    except BaseException:
        shutil.rmtree(local, ignore_errors=True)
        raise
    shutil.rmtree(local, ignore_errors=True)


def bundles(config: Config, env: str) -> list[str]:
    """The bundles of ``env`` where backup_dir is, oldest first: local paths or URLs. Only those
    with a manifest: an upload that did not finish is no bundle."""
    if not config.backup_url:
        return [str(p) for p in sorted(config.backup_dir.glob(f"{env}-*")) if (p / bundle.MANIFEST).is_file()]
    fs, root = filesystem(config.backup_url, config.storage)
    with _reaching(config.backup_url, "cannot list"):
        if not fs.exists(root):
            return []
        names = sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(root, detail=False, refresh=True))
        return [bundle_url(config.backup_url, n) for n in names if n.startswith(f"{env}-") and fs.exists(_join(root, n, bundle.MANIFEST))]


def remove(config: Config, name: str) -> None:
    """Delete a bundle, local or in the store; its manifest first, so a removal cut short leaves
    nothing that is listed as a bundle."""
    if not is_url(name):
        shutil.rmtree(name)
        return
    fs, path = filesystem(name, config.storage)
    with _reaching(name, "cannot remove"):
        fs.rm_file(_join(path, bundle.MANIFEST))
        fs.rm(path, recursive=True)
