"""Ray for the farm: import it (an optional extra), start the embedded local cluster or connect to
a running one.

The embedded cluster (``mimic farm`` without ``--address``) is private to the process that starts
it: every Ray process binds to 127.0.0.1 only, and unless ``RAY_AUTH_MODE`` is set, Ray's token
authentication is on with a fresh random token held in this process's environment (its children,
the Ray processes, inherit it; nothing is written to ``~/.ray``), so other users of the machine
cannot attach to it. A cluster started with ``ray start`` is joined with ``--address HOST:PORT``
(or ``auto``) under whatever authentication it was started with: see the README, "Render farms".
"""
from __future__ import annotations

import logging
import os
import secrets

from mimic.errors import ExitCode, MimicError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Ray's switch for "no multi-node cluster": every node address becomes the loopback address.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class FarmError(MimicError):
    """The farm cannot run: Ray missing, no cluster at --address, no worker could start."""

    exit_code = ExitCode.FAILED


def import_ray():
    try:
        import ray
    except ImportError:
        raise FarmError("`mimic farm` needs Ray: pip install 'mimic-engine[farm]' (ray[default]==2.60.0)") from None
    return ray


class Cluster:
    """A Ray connection the farm owns: ``close()`` stops what ``open()`` started and nothing else
    (a Ray session the caller had already initialised is used as it is and left running)."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None):
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.owned = False  # we called ray.init (and will call ray.shutdown)
        self.local = False  # ... and it started a local cluster
        self._env: dict[str, str | None] = {}

    def open(self) -> "Cluster":
        ray = import_ray()
        if ray.is_initialized():
            return self
        if self.address is None:
            self._start_local(ray)
        else:
            _check_reachable(self.address)
            try:
                ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=True)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise FarmError(f"cannot connect to the Ray cluster at {self.address}: {str(err).splitlines()[0]}") from None
        self.owned = True
        return self

    def _start_local(self, ray) -> None:
        import ray._private.ray_constants as constants

        self._set_env(_LOOPBACK_ENV, "0")
        constants.ENABLE_RAY_CLUSTER = False  # the already-imported module reads it per call
        if "RAY_AUTH_MODE" not in os.environ:
            self._set_env("RAY_AUTH_MODE", "token")
            self._set_env("RAY_AUTH_TOKEN", secrets.token_hex(32))
            _refresh_ray_config()
        ray.init(
            address="local", num_cpus=self.num_cpus, num_gpus=self.num_gpus, include_dashboard=False,
            logging_level=logging.WARNING, log_to_driver=True,
        )
        self.local = True

    def _set_env(self, name: str, value: str) -> None:
        self._env.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    @property
    def gcs_address(self) -> str:
        return import_ray().get_runtime_context().gcs_address

    def close(self) -> None:
        if self.owned:
            import_ray().shutdown()
            self.owned = self.local = False
        for name, value in self._env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if self._env:
            _refresh_ray_config()
        self._env = {}


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A HOST:PORT that nothing answers on is one line now (Ray itself retries for minutes)."""
    import socket

    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as err:
        raise FarmError(f"no Ray cluster answers at {address} ({getattr(err, 'strerror', None) or err}); start one with `ray start --head` or drop --address") from None


def _refresh_ray_config() -> None:
    """Ray caches its configuration (authentication mode included) per process; re-read it after
    changing RAY_AUTH_MODE in this process's environment."""
    try:
        from ray._raylet import Config

        Config.initialize("")
    except Exception:  # pragma: no cover - a Ray without this hook reads the environment at init
        pass
