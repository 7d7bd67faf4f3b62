"""``moto_server`` on loopback: the S3-compatible object store of the distributed profile
(scripts/distributed_stack.py), in memory, stopped by its own PID; and what an S3 client needs
to reach it (:meth:`MotoServer.env`)."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processes import free_port, stop_process_groups, wait_for

#: What moto accepts; the region every client and server of the stack uses.
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
REGION = "us-east-1"


@dataclass(frozen=True)
class MotoServer:
    """``moto_server`` (an S3-compatible store in memory) on a loopback port."""

    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, logs: Path, port: int | None = None) -> MotoServer:
        binary = Path(sys.executable).with_name("moto_server")
        port = port or free_port()
        with (logs / "moto.log").open("ab") as out:
            process = subprocess.Popen(
                [str(binary), "-H", "127.0.0.1", "-p", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = cls(port, process.pid)
        try:
            wait_for("moto_server", lambda: _answers(server.url), 60, logs)
        except TimeoutError:
            server.stop()
            raise
        return server

    def env(self) -> dict[str, str]:
        """What an S3 client (boto3, MLflow's artifact store, the steps) needs to use it."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "MLFLOW_S3_ENDPOINT_URL": self.url,
            **S3_KEYS,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def stop(self) -> None:
        stop_process_groups([self.pid], 20)


def _answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
        return bool(response.status == 200)
