"""One site as its own process: load the site's data, connect to the Flower server, train."""

from __future__ import annotations

import argparse
import json

import torch

from flwr.client import start_client

from farr.federated.client import LocalConfig, SiteClient, SiteTrainer
from farr.model.tokenizer import Tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--site", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--local", required=True, help="LocalConfig as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # sites share this machine's cores in a loopback federation
    trainer = SiteTrainer(args.site, Tokenizer.load(args.tokenizer), LocalConfig(**json.loads(args.local)))
    start_client(server_address=args.server, client=SiteClient(trainer).to_client(), insecure=True)


if __name__ == "__main__":
    main()
