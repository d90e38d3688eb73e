"""One site as its own process: load the site's data, connect to the server on loopback, train.

Plain federations use Flower's client; with secure aggregation the site serves its SecAgg+
ClientApp over an authenticated socket (the key comes in the environment, never in argv or logs).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from multiprocessing.connection import Client

import torch
from flwr.client import start_client

from farr.federated.client import LocalConfig, SiteClient, SiteTrainer
from farr.model.tokenizer import Tokenizer

SITE_KEY = "FARR_SITE_KEY"  # the environment variable holding the loopback socket's shared key


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--site", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--server", required=True, help="host:port")
    parser.add_argument("--local", required=True, help="LocalConfig as JSON")
    parser.add_argument("--node", type=int, help="secure aggregation: this site's node id on the server's grid")
    parser.add_argument("--clipped", action="store_true", help="secure aggregation: clip the update at the site (DP)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # sites share this machine's cores in a loopback federation
    logging.getLogger("flwr").setLevel(logging.WARNING)  # the server reads this stderr only for errors
    trainer = SiteTrainer(args.site, Tokenizer.load(args.tokenizer), LocalConfig(**json.loads(args.local)))
    if args.node is None:
        start_client(server_address=args.server, client=SiteClient(trainer).to_client(), insecure=True)
        return
    from farr.federated.secure import serve_site, site_app

    host, port = args.server.rsplit(":", 1)
    with Client((host, int(port)), authkey=bytes.fromhex(os.environ.pop(SITE_KEY))) as connection:
        connection.send_bytes(str(args.node).encode())
        serve_site(connection, site_app(SiteClient(trainer), args.clipped), args.node)


def start(arguments: list[str], env: dict | None = None) -> subprocess.Popen:
    """The server's start of a site process (stderr kept for its error, if it fails)."""
    return subprocess.Popen([sys.executable, "-m", "farr.federated.site_process", *arguments], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(worker: subprocess.Popen) -> None:
    """The server's end of a site process: let it finish, or end it."""
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


if __name__ == "__main__":
    main()
