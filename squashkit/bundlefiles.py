"""A bundle's files as streams: gzip for db.json, age encryption for every file, never plaintext on disk.

``backup --compress`` writes ``db.json.gz``; ``backup --encrypt-to RECIPIENT`` writes every file
as ``NAME.age`` (the manifest lists them, and itself stays readable: it holds row counts and
hashes, never a row). Everything that reads or writes a bundle file goes through ``open_write``
and ``open_read`` (or ``program_input`` for pg_restore's stdin), so the plaintext only ever
exists in a pipe or in memory:

- writing: the producer (pg_dump through ``-f /dev/fd/N``, the json writer, tar) writes into a
  pipe whose other end a thread encrypts (``pyrage.encrypt_io``) straight into the file;
- reading: a thread decrypts the file into a pipe, read by squashkit or given to pg_restore as
  its standard input (a custom-format archive restores from stdin; a directory-format dump
  cannot be encrypted, which ``backup`` refuses).

A backup reads its own files back before it exists (``pg_restore -l``, db.json to its last
line). It cannot do so with the recipients' public keys alone, so it also encrypts to an
ephemeral key that lives only in this process's memory for the backup's duration: the read-back
decrypts with it, and once the backup ends nobody holds it.

Which identities decrypt is set for a run by ``unlocking`` (the CLI's ``--identity FILE`` or
``$SQUASHKIT_AGE_IDENTITY``); ``require_identity`` proves it on the bundle's smallest encrypted
file before anything changes.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pyrage
from pydantic import BaseModel, Field

from squashkit.errors import BadInput, OperationFailed

AGE = ".age"
IDENTITY_VARIABLE = "SQUASHKIT_AGE_IDENTITY"
# zlib level 6 (gzip's default) costs twice level 1's time for 15% less: measured in the README.
GZIP_LEVEL = 1
_unlocked: list = []  # identities of the run in progress (``unlocking``), never written anywhere


class Sealing(BaseModel):
    """How a backup writes its files."""

    compress: bool = Field(False, description="db.json as db.json.gz.")
    recipients: list[str] = Field(default_factory=list, description="age recipients (age1... or ssh public keys).")

    @property
    def encrypted(self) -> bool:
        return bool(self.recipients)

    def name(self, name: str, *, compressible: bool = False) -> str:
        """The file name a bundle member gets: ``.gz`` for the json when compressing, ``.age`` when encrypting."""
        name = f"{name}.gz" if compressible and self.compress else name
        return f"{name}{AGE}" if self.encrypted else name


PLAIN = Sealing()
COMPRESSED = Sealing(compress=True)  # the default: db.json.gz is 5 times smaller and costs no time (README)


def parse_recipients(texts: list[str]) -> list:
    """age recipients from their public text; one line naming the one that is not."""
    parsed = []
    for text in texts:
        text = text.strip()
        try:
            parsed.append(pyrage.ssh.Recipient.from_str(text) if text.startswith("ssh-") else pyrage.x25519.Recipient.from_str(text))
        except (pyrage.RecipientError, ValueError) as exc:
            raise BadInput(f"--encrypt-to {text[:24]!r} is not an age recipient (age1... or an ssh public key): {exc}") from None
    return parsed


def load_identities(path: Path | None) -> list:
    """The identities of ``--identity FILE``, else of ``$SQUASHKIT_AGE_IDENTITY`` (a file, or the key
    itself); a clear one-line error when there is none or it is not an age identity."""
    source = str(path) if path else os.environ.get(IDENTITY_VARIABLE)
    if not source:
        raise BadInput(f"the bundle is encrypted: pass --identity FILE or set ${IDENTITY_VARIABLE} (nothing was changed)")
    if source.startswith("AGE-SECRET-KEY-"):
        text, where = source, f"${IDENTITY_VARIABLE}"
    else:
        where = source
        try:
            text = Path(source).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"cannot read the identity file {source}: {getattr(exc, 'strerror', None) or exc} (nothing was changed)") from None
    identities = []
    if text.lstrip().startswith("-----BEGIN"):
        with contextlib.suppress(Exception):
            identities.append(pyrage.ssh.Identity.from_buffer(text.encode()))
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                identities.append(pyrage.x25519.Identity.from_str(line))
            except (pyrage.IdentityError, ValueError):
                raise BadInput(f"{where} holds a damaged age identity (nothing was changed)") from None
    if not identities:
        raise BadInput(f"{where} holds no age identity (AGE-SECRET-KEY-...) (nothing was changed)")
    return identities


@contextlib.contextmanager
def unlocking(identities: list) -> Iterator[None]:
    """Let ``open_read`` decrypt with ``identities`` for the block (one run)."""
    _unlocked[:0] = identities
    try:
        yield
    finally:
        for identity in identities:
            _unlocked.remove(identity)


def ephemeral() -> tuple:
    """(identity, recipient) of a key that lives only in this process: a backup's own read-back."""
    identity = pyrage.x25519.Identity.generate()
    return identity, identity.to_public()


def require_identity(directory: Path, names: list[str]) -> None:
    """Decrypt the smallest of the bundle's encrypted files ``names`` in memory, so a missing or
    wrong identity is refused before anything changes."""
    encrypted = [directory / name for name in names if name.endswith(AGE) and (directory / name).is_file()]
    if not encrypted:
        return
    smallest = min(encrypted, key=lambda path: path.stat().st_size)
    if not _unlocked:
        load_identities(None)  # raises the one-line "pass --identity" error
    try:
        pyrage.decrypt(smallest.read_bytes(), list(_unlocked))
    except pyrage.DecryptError as exc:
        raise BadInput(f"the identity given does not decrypt {directory.name}/{smallest.name} ({exc}): nothing was changed") from None


@contextlib.contextmanager
def open_write(path: Path, recipients: list | None = None, *, compress: bool = False) -> Iterator[BinaryIO]:
    """A binary writer for the bundle file ``path``: gzip when ``compress``, age when ``recipients``."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(_encrypting(path, recipients) if recipients else open(path, "wb"))
        if compress:
            out = stack.enter_context(gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=GZIP_LEVEL, mtime=0))
        yield out


@contextlib.contextmanager
def open_read(path: Path, *, decompress: bool = True) -> Iterator[BinaryIO]:
    """A binary reader of the bundle file ``path``: decrypted (``.age``) and, with ``decompress``,
    gunzipped (``.gz``) on the way."""
    name = path.name.removesuffix(AGE)
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(_decrypting(path) if path.name.endswith(AGE) else open(path, "rb"))
        if decompress and name.endswith(".gz"):
            source = stack.enter_context(gzip.GzipFile(fileobj=source, mode="rb"))
        yield source


def read_bytes(path: Path) -> bytes:
    """A small bundle file (contenttypes.json, migrations.tar.gz), decrypted in memory, not gunzipped."""
    with open_read(path, decompress=False) as source:
        return source.read()


@contextlib.contextmanager
def program_input(path: Path) -> Iterator[tuple[list[str], BinaryIO | None]]:
    """(file arguments, stdin) for a client program that reads ``path``: the path itself when it
    is plain, else nothing and a pipe that carries the decrypted bytes."""
    if not path.name.endswith(AGE):
        yield [str(path)], None
        return
    with _decrypting(path) as source:
        yield [], source


@contextlib.contextmanager
def program_output(path: Path, recipients: list | None) -> Iterator[tuple[str, list[int]]]:
    """(the ``-f`` argument, fds to pass) for a client program writing ``path``: the path itself,
    or ``/dev/fd/N`` of a pipe that is encrypted into ``path``."""
    if not recipients:
        yield str(path), []
        return
    with _encrypting(path, recipients) as sink:
        # The child inherits only the fds it is passed (sh closes the rest), so this one must be inheritable.
        os.set_inheritable(sink.fileno(), True)
        yield f"/dev/fd/{sink.fileno()}", [sink.fileno()]


@contextlib.contextmanager
def _encrypting(path: Path, recipients: list) -> Iterator[BinaryIO]:
    """A pipe whose other end a thread encrypts into ``path``: nothing plain reaches the disk."""
    read_end, write_end = os.pipe()
    with open(path, "wb") as target:

        def work() -> None:
            with os.fdopen(read_end, "rb") as source:
                pyrage.encrypt_io(source, target, recipients)

        thread, errors = _background(work, f"encrypt {path.name}")
        sink = os.fdopen(write_end, "wb")
        try:
            yield sink
        except BrokenPipeError:
            pass  # the encryptor stopped: its own error, raised below, says why
        finally:
            with contextlib.suppress(OSError):
                sink.close()  # the encryptor's end of input
            thread.join()
    if errors:
        raise OperationFailed(f"encrypting {path.name} failed: {errors[0]}")


@contextlib.contextmanager
def _decrypting(path: Path) -> Iterator[BinaryIO]:
    """A pipe a thread decrypts ``path`` into, with the identities of the run (``unlocking``)."""
    if not _unlocked:
        load_identities(None)  # raises the one-line "pass --identity" error
    identities = list(_unlocked)
    read_end, write_end = os.pipe()

    def work() -> None:
        with open(path, "rb") as encrypted, os.fdopen(write_end, "wb") as sink:
            pyrage.decrypt_io(encrypted, sink, identities)

    thread, errors = _background(work, f"decrypt {path.name}")
    source = os.fdopen(read_end, "rb")
    finished = False
    try:
        yield source
        finished = True
    finally:
        source.close()  # a reader that stopped early (pg_restore -l) breaks the decryptor's pipe
        thread.join()
        failure = next((e for e in errors if not _broken_pipe(e)), None)
        if failure is not None and (finished or isinstance(failure, pyrage.DecryptError)):
            raise OperationFailed(f"decrypting {path.name} failed: {failure}") from None


def _background(work, name: str) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``work`` in a thread; its error is kept for the caller's thread to raise."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - raised by the caller once the pipe is closed
            errors.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread, errors


def _broken_pipe(exc: BaseException) -> bool:
    return isinstance(exc, BrokenPipeError) or "Broken pipe" in str(exc)
