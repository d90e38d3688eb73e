"""Secure aggregation with Flower's SecAgg+: the server learns only the weighted sum of the sites'
models, never one site's model.

Flower runs SecAgg+ (`SecAggPlusWorkflow` at the server, `secaggplus_mod` at each site) on its
message API: a Grid carries Messages to nodes, each running a ClientApp. Flower's runtimes for
that (its Ray simulation, or SuperLink and SuperNodes) do not install beside farr's pins, so
`SiteGrid` here is that Grid: it carries each message, serialised as Flower's protobuf, to a
site's ClientApp in this process or to a site process over an authenticated loopback socket.
The protocol itself (key agreement, secret shares, masks, recovery from dropouts) is Flower's.

A server that sees only the sum cannot check one site's update, so each site checks its own
before masking it (`withhold_bad_updates`): a bad update is replaced by the model it received,
with weight zero, and the reason travels in the clear metrics to the ledger.
"""

from __future__ import annotations

import os
import queue
import secrets
import subprocess
import threading
import time
from collections import Counter, deque
from contextlib import contextmanager
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from uuid import uuid4

import numpy as np

from flwr.app import Context, Error, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import FitRes, GetPropertiesIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode, MessageTypeLegacy
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.compat.common import recorddict_compat as compat
from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=no-name-in-module
from flwr.server import ServerConfig
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp.grid import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from farr.federated.client import SiteClient
from farr.federated.site_process import SITE_KEY, start, stop
from farr.federated.strategy import FederationConfig, GuardedStrategy, update_problem

RUN_ID = 1
# SecAgg+ sums integers modulo 2**32; each site's quantised model must leave room for all sites' sum.
MODULUS = 2**32
CLIPPING_RANGE = 8.0  # SecAgg+ quantises within ±8 (trained farr models stay within ±3); a site withholds more


# -- the site's side ---------------------------------------------------------------------------
def withhold_bad_updates(message: Message, context: Context, call_next) -> Message:
    """A Flower mod: a malformed, non-finite or out-of-range update (or none, e.g. from a site with
    another vocabulary) is replaced by the parameters the site received, with weight zero, and the
    reason is sent in the clear metrics instead."""
    reply = call_next(message, context)
    if message.metadata.message_type != MessageType.TRAIN or reply.has_error():
        return reply
    fit_ins = compat.recorddict_to_fitins(message.content, keep_input=True)
    fit = compat.recorddict_to_fitres(reply.content, keep_input=True)
    received, update = parameters_to_ndarrays(fit_ins.parameters), parameters_to_ndarrays(fit.parameters)
    problem = update_problem(update, received) or _out_of_range(update) or \
        (None if fit.num_examples > 0 else "no training examples")
    if problem is None:
        return reply
    withheld = FitRes(fit.status, ndarrays_to_parameters(received), 0, {**fit.metrics, "withheld": problem})
    return Message(compat.fitres_to_recorddict(withheld, keep_input=True), reply_to=message)


def _out_of_range(update: list[np.ndarray]) -> str | None:
    """SecAgg+ would clip these values silently; say so instead."""
    largest = max(float(np.abs(a).max(initial=0.0)) for a in update)
    return f"update holds {largest:.3g}, beyond secure aggregation's range ±{CLIPPING_RANGE:g}" \
        if largest > CLIPPING_RANGE else None


def site_app(client: SiteClient, clipped: bool) -> ClientApp:
    """The site's ClientApp: SecAgg+ masks what the (clipped, checked) training step returns."""
    def client_fn(context: Context):
        return client.to_client()

    inner = [fixedclipping_mod] if clipped else []
    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod, *inner, withhold_bad_updates])


def answer(app: ClientApp, context: Context, data: bytes) -> bytes:
    """One message at a site: its ClientApp's reply, or the error it raised, as Flower's runtime does."""
    message = message_from_proto(ProtoMessage.FromString(data))
    try:
        reply = app(message, context)
    except Exception as exc:  # noqa: BLE001 - the site reports its failure; the protocol recovers
        reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(exc).__name__}: {exc}"), reply_to=message)
    return message_to_proto(reply).SerializeToString()


def node_context(node_id: int) -> Context:
    """Where a site's SecAgg+ keys and shares live between the protocol's stages."""
    return Context(run_id=RUN_ID, node_id=node_id, node_config={}, state=RecordDict(), run_config={})


def serve_site(connection: Connection, app: ClientApp, node_id: int) -> None:
    """A site process's loop: answer the server's messages until it closes the connection."""
    context = node_context(node_id)
    while True:
        try:
            data = connection.recv_bytes()
        except EOFError:
            return
        connection.send_bytes(answer(app, context, data))


# -- links from the grid to the sites ----------------------------------------------------------
class InProcessLink:
    """A site in this process, with a Connection's methods: each message is answered as it is sent."""

    def __init__(self, app: ClientApp, node_id: int):
        self.app, self.context, self.replies = app, node_context(node_id), deque()

    def send_bytes(self, data: bytes) -> None:
        self.replies.append(answer(self.app, self.context, data))

    def poll(self, timeout: float) -> bool:
        return bool(self.replies)

    def recv_bytes(self) -> bytes:
        return self.replies.popleft()

    def close(self) -> None:
        self.replies.clear()


class SiteGrid(Grid):
    """Flower's Grid over farr's sites: each message goes, as Flower's protobuf, down one site's link
    (all of a stage's messages first, so sites in their own processes work at once). A site whose
    link breaks, or that has not answered by the workflow's timeout, is dropped from the grid: a
    late answer would otherwise be read as the answer to the next message."""

    def __init__(self, links: dict[int, InProcessLink | Connection]):
        self.links, self._run = links, Run.create_empty(RUN_ID)
        self.pending: dict[str, Message] = {}
        self.traffic: Counter = Counter()  # bytes by (round, "to_sites" | "from_sites")
        self.failed: dict[str, set[int]] = {}  # by round, the nodes that failed at its first failing stage
        self.lost: dict[int, str] = {}  # nodes dropped from the grid, and why

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        return list(self.links)

    def push_messages(self, messages) -> list[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid4().hex  # as Flower's in-memory grid does
            data = message_to_proto(message).SerializeToString()
            self.traffic[message.metadata.group_id, "to_sites"] += len(data)
            self.pending[message.metadata.message_id] = message
            self._exchange(message, lambda link: link.send_bytes(data))
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids, deadline: float | None = None) -> list[Message]:
        replies = [self._reply(self.pending.pop(i), deadline) for i in message_ids]
        failed: dict[str, set[int]] = {}
        for reply in replies:
            if reply.has_error():
                failed.setdefault(reply.metadata.group_id, set()).add(reply.metadata.src_node_id)
        for group, nodes in failed.items():  # at later stages the others fail because of these, not themselves
            self.failed.setdefault(group, nodes)
        return replies

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        deadline = None if timeout is None else time.monotonic() + timeout
        return self.pull_messages(self.push_messages(messages), deadline)

    def _reply(self, message: Message, deadline: float | None) -> Message:
        def receive(link) -> bytes:
            if deadline is not None and not link.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"no answer within the round timeout ({message.metadata.message_type})")
            return link.recv_bytes()

        node = message.metadata.dst_node_id
        data = self._exchange(message, receive)
        if data is None:
            return Message(Error(ErrorCode.NODE_UNAVAILABLE, f"node {node}: {self.lost[node]}"), reply_to=message)
        self.traffic[message.metadata.group_id, "from_sites"] += len(data)
        return message_from_proto(ProtoMessage.FromString(data))

    def _exchange(self, message: Message, act):
        """Act on the destination's link; a broken or silent link drops the site from the grid (None)."""
        node = message.metadata.dst_node_id
        if node not in self.links:
            return None
        try:
            return act(self.links[node])
        except (EOFError, OSError) as lost:  # TimeoutError is an OSError
            self.links.pop(node).close()
            self.lost[node] = str(lost) or "disconnected"
            return None


# -- the server's side -------------------------------------------------------------------------
def run_secure_rounds(grid: SiteGrid, strategy: GuardedStrategy, cfg: FederationConfig) -> GuardedStrategy:
    """Flower's default workflow with SecAgg+ as its training step, over `grid`'s sites."""
    sites = len(grid.get_node_ids())
    if sites < 2:
        raise ValueError(f"--secagg: secure aggregation needs at least 2 sites, got {sites}")
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, RUN_ID, SUPERLINK_NODE_ID  # as start_grid does
    # Every site holds a share of every other's key; a majority of them can unmask a site that drops out.
    workflow = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=(sites // 2 + 1) / sites,
                                  max_weight=float(max(site_sizes(grid, cfg.round_timeout_s))),
                                  clipping_range=CLIPPING_RANGE, timeout=cfg.round_timeout_s,
                                  quantization_range=MODULUS // _next_power_of_two(sites + 1))
    config = ServerConfig(num_rounds=cfg.rounds, round_timeout=cfg.round_timeout_s)
    context = LegacyContext(context=node_context(SUPERLINK_NODE_ID), config=config, strategy=strategy)
    with np.errstate(divide="ignore", invalid="ignore"):  # a round every site withheld has total weight 0
        DefaultWorkflow(fit_workflow=workflow)(grid, context)
    logged = {entry["round"] for entry in strategy.rounds}
    for halted in sorted(set(range(1, cfg.rounds + 1)) - logged):  # too few sites answered to unmask the sum
        strategy.halted(halted, sorted(str(node) for node in grid.failed.get(str(halted), ())))
    for entry in strategy.rounds:  # what really crossed the wire: masked models, keys and shares
        entry["mb_to_sites"] = round(grid.traffic[str(entry["round"]), "to_sites"] / 1e6, 3)
        entry["mb_from_sites"] = round(grid.traffic[str(entry["round"]), "from_sites"] / 1e6, 3)
    return strategy


def site_sizes(grid: SiteGrid, timeout: float | None) -> list[int]:
    """Each site's training patients (public in its update metadata), to scale SecAgg+'s weights."""
    ask = compat.getpropertiesins_to_recorddict(GetPropertiesIns({}))
    replies = grid.send_and_receive([Message(ask, node, MessageTypeLegacy.GET_PROPERTIES, group_id="0")
                                     for node in grid.get_node_ids()], timeout=timeout)
    sizes = [int(compat.recorddict_to_getpropertiesres(r.content).properties.get("patients", 1))
             for r in replies if not r.has_error()]
    return sizes or [1]


def _next_power_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def in_process_grid(clients: list[SiteClient], clipped: bool) -> SiteGrid:
    return SiteGrid({node: InProcessLink(site_app(client, clipped), node) for node, client in enumerate(clients, 1)})


@contextmanager
def loopback_grid(sites: list[Path], site_command: list[str], timeout_s: float):
    """Site processes that connect to this server's authenticated loopback socket; yields their grid."""
    key = secrets.token_bytes(32)
    with Listener(("127.0.0.1", 0), authkey=key) as listener:
        host, port = listener.address
        env = os.environ | {SITE_KEY: key.hex()}
        workers = [start([*site_command, "--site", str(site), "--server", f"{host}:{port}", "--node", str(node)], env)
                   for node, site in enumerate(sites, 1)]
        connections: dict[int, Connection] = {}
        try:
            _accept(listener, workers, sites, timeout_s, connections)
            yield SiteGrid(dict(sorted(connections.items())))
        finally:
            for connection in connections.values():
                connection.close()
            for worker in workers:
                stop(worker)


def _accept(listener: Listener, workers: list[subprocess.Popen], sites: list[Path], timeout_s: float,
            connections: dict[int, Connection]) -> None:
    """Every site's connection, by node id; a site that exits or never connects is a clear error."""
    arrived: queue.Queue = queue.Queue()

    def accept_all():
        try:
            for _ in sites:
                connection = listener.accept()
                arrived.put((int(connection.recv_bytes()), connection))
        except OSError:  # the listener closed: the server gave up waiting
            return

    threading.Thread(target=accept_all, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while len(connections) < len(sites):
        try:
            node, connection = arrived.get(timeout=0.5)
            connections[node] = connection
        except queue.Empty:
            for worker, site in zip(workers, sites):
                if worker.poll() is not None:
                    last = (worker.stderr.read().decode(errors="replace").strip().splitlines() or ["no output"])[-1]
                    raise RuntimeError(f"site {site.name}: its process exited before connecting: {last}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(connections)} of {len(sites)} sites connected within {timeout_s:g} s")
