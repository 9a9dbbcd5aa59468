"""A real S3-compatible HTTP server on 127.0.0.1 for the tests (moto's standalone server), with
authentication on, and a TCP relay in front of it that can cut the connection mid-upload."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

POLICY = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}'


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class S3Server:
    url: str
    key_id: str
    secret: str

    def client(self, **override):
        import boto3

        options = {"endpoint_url": self.url, "region_name": "us-east-1",
                   "aws_access_key_id": self.key_id, "aws_secret_access_key": self.secret, **override}
        return boto3.client("s3", **options)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto_server on a free port; the first requests (creating a user with an access key) are let
    through, every later one needs that key's signature, so wrong credentials are refused."""
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3", "MOTO_ALLOW_NONEXISTENT_REGION": "1"}
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        import boto3

        url = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bootstrap", aws_secret_access_key="x")
        iam.create_user(UserName="squashkit")
        iam.put_user_policy(UserName="squashkit", PolicyName="s3", PolicyDocument=POLICY)
        key = iam.create_access_key(UserName="squashkit")["AccessKey"]
        yield S3Server(url, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def cutting_relay(target_port: int, after_bytes: int) -> Iterator[int]:
    """A TCP relay on 127.0.0.1 to ``target_port`` that, once ``after_bytes`` went towards the
    server, closes every connection and stops accepting: a network cut mid-upload."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    sent = [0]
    cut = threading.Event()
    sockets: list[socket.socket] = []

    def pump(source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        with contextlib.suppress(OSError):
            while not cut.is_set():
                data = source.recv(65536)
                if not data:
                    break
                if upstream:
                    sent[0] += len(data)
                    if sent[0] > after_bytes:
                        cut.set()
                        break
                sink.sendall(data)
        if cut.is_set():
            for each in list(sockets):
                with contextlib.suppress(OSError):
                    each.shutdown(socket.SHUT_RDWR)
                    each.close()
            with contextlib.suppress(OSError):
                listener.close()

    def accept() -> None:
        with contextlib.suppress(OSError):
            while not cut.is_set():
                client, _ = listener.accept()
                server = socket.create_connection(("127.0.0.1", target_port))
                sockets.extend([client, server])
                threading.Thread(target=pump, args=(client, server, True), daemon=True).start()
                threading.Thread(target=pump, args=(server, client, False), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        cut.set()
        with contextlib.suppress(OSError):
            listener.close()
