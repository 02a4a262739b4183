"""A real Redis Cluster on loopback for tests and benchmarks: N masters, each with R replicas, each a redis-server.

    with LocalCluster(masters=3, replicas=1) as cluster:
        broker = RedisBroker(cluster.url)          # redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...

Three masters or more are joined by `redis-cli --cluster create` (as an operator would); fewer (one or two shards,
which redis-cli refuses) by CLUSTER ADDSLOTSRANGE and CLUSTER MEET. Each server gets its own cluster-bus port
(`--cluster-port`, Redis 7), so no port needs to stay below 55,535.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from types import TracebackType
from typing import Any

import redis

from ..embedded import EmbeddedRedis, find_server_binary, free_port
from ..errors import BrokerConnectionError

__all__ = ["SLOTS", "LocalCluster", "find_cli_binary"]

SLOTS = 16384


def find_cli_binary() -> str | None:
    """Find `redis-cli` (Debian's redis-tools) or `valkey-cli`."""
    return shutil.which("redis-cli") or shutil.which("valkey-cli")


class LocalCluster:
    """`masters` shards of `1 + replicas` redis-servers each, joined into one cluster on 127.0.0.1."""

    def __init__(self, masters: int = 3, replicas: int = 1, *, node_timeout_ms: int = 1000) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError(f"a cluster needs at least one master, got masters={masters} replicas={replicas}")
        self.binary = find_server_binary()
        if self.binary is None:
            raise BrokerConnectionError("no redis-server found: apt-get install redis-server")
        self.masters_wanted = masters
        self.replicas_wanted = replicas
        self.node_timeout_ms = node_timeout_ms
        self.servers: list[EmbeddedRedis] = []

    # Life ---------------------------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> LocalCluster:
        """Start every server, join them and wait until every node sees every slot served."""
        for _ in range(self.masters_wanted * (1 + self.replicas_wanted)):
            args = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--cluster-port", str(free_port()),
                # A lone test machine: a replica may always take over, however long it was cut off.
                "--cluster-replica-validity-factor", "0",
                # A replica's first sync starts at once (by default a master waits 5 s for more replicas).
                "--repl-diskless-sync-delay", "0",
            ]  # fmt: skip
            self.servers.append(EmbeddedRedis(self.binary, extra_args=args).start())
        try:
            if self.masters_wanted >= 3:
                self._create_with_cli()
            else:
                self._create_by_hand()
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _create_with_cli(self) -> None:
        cli = find_cli_binary()
        if cli is None:
            raise BrokerConnectionError("no redis-cli found: apt-get install redis-tools")
        hosts = [f"127.0.0.1:{s.port}" for s in self.servers]
        done = subprocess.run(
            [cli, "--cluster", "create", *hosts, "--cluster-replicas", str(self.replicas_wanted), "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise BrokerConnectionError(f"redis-cli --cluster create failed: {done.stdout[-2000:]}{done.stderr}")

    def _create_by_hand(self) -> None:
        masters = self.servers[: self.masters_wanted]
        per = SLOTS // len(masters)
        for i, srv in enumerate(masters):
            last = SLOTS - 1 if i == len(masters) - 1 else (i + 1) * per - 1
            self.admin(srv).execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
        first = self.admin(self.servers[0])
        for srv in self.servers[1:]:
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", srv.port, self._bus_port(srv))
        ids = {self.node_id(s) for s in self.servers}

        def met() -> bool:  # every node knows every other by its real id, the handshakes done
            for s in self.servers:
                lines = self._nodes(s)
                if {line[0] for line in lines} != ids or any("handshake" in line[2] for line in lines):
                    return False
            return True

        self._wait(met, 20, "the nodes to meet")
        master_ids = [self.node_id(m) for m in masters]
        for k, srv in enumerate(self.servers[len(masters) :]):
            self.admin(srv).execute_command("CLUSTER", "REPLICATE", master_ids[k % len(master_ids)])

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every running node reports cluster_state:ok and agrees on who serves every slot, and every
        replica's link to its master is up (it has its master's data)."""

        def ok() -> bool:
            try:
                running = [s for s in self.servers if s.proc is not None]
                views = set()
                for s in running:
                    info = self.admin(s).execute_command("CLUSTER", "INFO")
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    if "cluster_state:ok" not in text:
                        return False
                    views.add(tuple(sorted(self.slot_owners(s).items())))
                    rep = self.admin(s).info("replication")
                    if rep.get("role") == "slave" and rep.get("master_link_status") != "up":
                        return False
                return len(views) == 1
            except redis.RedisError:
                return False

        self._wait(ok, timeout, "cluster_state:ok on every node")

    def stop(self) -> None:
        """Stop every server and remove its folder."""
        for srv in self.servers:
            srv.stop()
        self.servers = []

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # Looking at it ----------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """`redis+cluster://` naming every node, as a deployment's REDIS_URL would."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers) + "/"

    def admin(self, srv: EmbeddedRedis) -> Any:
        """A plain client of one node (not cluster-aware: it sees what that node says)."""
        return redis.Redis(host="127.0.0.1", port=srv.port, socket_timeout=5.0, socket_connect_timeout=1.0)

    def node_id(self, srv: EmbeddedRedis) -> str:
        """The cluster node id of `srv`."""
        raw = self.admin(srv).execute_command("CLUSTER", "MYID")
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def _bus_port(self, srv: EmbeddedRedis) -> int:
        args = srv.extra_args
        return int(args[args.index("--cluster-port") + 1])

    def _nodes(self, srv: EmbeddedRedis) -> list[list[str]]:
        raw = self.admin(srv).execute_command("CLUSTER", "NODES")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return [line.split() for line in text.splitlines() if line.strip()]

    def slot_owners(self, srv: EmbeddedRedis | None = None) -> dict[int, int]:
        """Each slot range's first slot and the port of the master serving it, as `srv` sees it."""
        srv = srv or next(s for s in self.servers if s.proc is not None)
        out: dict[int, int] = {}
        for line in self._nodes(srv):
            flags = line[2].split(",")
            if "master" not in flags or "fail" in flags:
                continue
            port = int(line[1].split("@")[0].rsplit(":", 1)[1])
            for rng in line[8:]:
                if rng.startswith("["):
                    continue  # a slot being migrated or imported
                lo = int(rng.split("-")[0])
                out[lo] = port
        return out

    def masters(self) -> list[EmbeddedRedis]:
        """The servers that are masters now, in the order they were started."""
        out = []
        for s in self.servers:
            if s.proc is None:
                continue
            role = self.admin(s).execute_command("ROLE")[0]
            if role in (b"master", "master"):
                out.append(s)
        return out

    def server_of_slot(self, slot: int) -> EmbeddedRedis:
        """The running master that serves `slot`."""
        for s in self.masters():
            ranges = self.slot_ranges(s)
            if any(lo <= slot <= hi for lo, hi in ranges):
                return s
        raise LookupError(f"no running master serves slot {slot}")

    def slot_ranges(self, srv: EmbeddedRedis) -> list[tuple[int, int]]:
        """The slot ranges `srv` serves, as it says."""
        me = next(line for line in self._nodes(srv) if "myself" in line[2])
        out = []
        for rng in me[8:]:
            if rng.startswith("["):
                continue
            lo, _, hi = rng.partition("-")
            out.append((int(lo), int(hi or lo)))
        return out

    def replica_of(self, master: EmbeddedRedis) -> EmbeddedRedis:
        """A running replica of `master`."""
        mid = self.node_id(master)
        for s in self.servers:
            if s is master or s.proc is None:
                continue
            role = self.admin(s).execute_command("ROLE")
            if role[0] in (b"slave", "slave") and int(role[2]) == master.port:
                return s
        raise LookupError(f"master {master.port} ({mid}) has no running replica")

    @staticmethod
    def keyslot(key: str) -> int:
        """The slot of `key` (its hash tag's, if it has one), as Redis computes it."""
        from redis.crc import key_slot

        return int(key_slot(key.encode()))

    # Changing it --------------------------------------------------------------------------------------------
    def kill(self, srv: EmbeddedRedis) -> None:
        """SIGKILL one server (a crash: nothing flushed, no goodbye to the cluster)."""
        assert srv.proc is not None
        srv.proc.kill()
        srv.proc.wait()
        srv.proc = None

    def restart(self, srv: EmbeddedRedis) -> None:
        """Start a killed server again on its port and folder: it rejoins from its nodes.conf."""
        srv.start()

    def wait_for_failover(self, old_master: EmbeddedRedis, timeout: float = 30.0) -> EmbeddedRedis:
        """Wait until a replica took over the slots of the dead `old_master`; return the new master."""
        port = old_master.port
        survivor = next(s for s in self.servers if s.proc is not None)
        before = {lo for lo, p in self.slot_owners(survivor).items() if p == port}

        def moved() -> bool:
            owners = self.slot_owners(survivor)
            return bool(before) and all(lo in owners and owners[lo] != port for lo in before)

        self._wait(moved, timeout, f"a replica to take over the slots of {port}")
        new_port = self.slot_owners(survivor)[min(before)]
        self.wait_ok(timeout)
        return next(s for s in self.servers if s.port == new_port)

    def migrate_slot(self, slot: int, target: EmbeddedRedis, *, batch: int = 1, pause: float = 0.0) -> int:
        """Move `slot` to `target` as `redis-cli --cluster reshard` does (IMPORTING, MIGRATING, MIGRATE the keys,
        SETSLOT NODE everywhere), `batch` keys at a time with `pause` seconds between: clients meanwhile get ASK,
        then MOVED. Returns how many keys moved."""
        source = self.server_of_slot(slot)
        if source is target:
            return 0
        src, dst = self.admin(source), self.admin(target)
        src_id, dst_id = self.node_id(source), self.node_id(target)
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        moved = 0
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            if pause:
                time.sleep(pause)
        for s in self.masters():
            self.admin(s).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        self.wait_ok()
        return moved

    def reshard(self, source: EmbeddedRedis, target: EmbeddedRedis, slots: int) -> None:
        """Move `slots` slots from `source` to `target` with `redis-cli --cluster reshard`."""
        cli = find_cli_binary()
        if cli is None:
            raise BrokerConnectionError("no redis-cli found: apt-get install redis-tools")
        done = subprocess.run(
            [cli, "--cluster", "reshard", f"127.0.0.1:{source.port}", "--cluster-from", self.node_id(source),
             "--cluster-to", self.node_id(target), "--cluster-slots", str(slots), "--cluster-yes"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise BrokerConnectionError(f"redis-cli --cluster reshard failed: {done.stdout[-2000:]}{done.stderr}")
        self.wait_ok()

    @staticmethod
    def _wait(predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise BrokerConnectionError(f"the local Redis Cluster: gave up waiting for {what} after {timeout:.0f}s")
