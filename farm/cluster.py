"""Ray for the farm: import it (an optional extra), start the embedded local cluster or connect to
a running one.

The embedded cluster (``mimic farm`` without ``--address``) is private to the process that starts
it: every Ray process binds to 127.0.0.1 only, and unless ``RAY_AUTH_MODE`` is set, Ray's token
authentication is on with a fresh random token held in this process's environment (its children,
the Ray processes, inherit it; nothing is written to ``~/.ray``), so other users of the machine
cannot attach to it. A cluster started with ``ray start`` is joined with ``--address HOST:PORT``
(or ``auto``) under whatever authentication it was started with: see the README, "Render farms".
The address is probed first (``probe``: a TCP connect, HTTP/2's preface, Ray's own cluster-id
check; seconds), so one where no Ray cluster answers is one line, exit code 2, not minutes of
Ray's retries and their log lines.
"""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import sys
import tempfile

from mimic.errors import ExitCode, InputError, MimicError
from mimic.farm.signals import current_handlers, held, reraise, restore

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Ray's switch for "no multi-node cluster": every node address becomes the loopback address.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class FarmError(MimicError):
    """The farm cannot run: Ray missing, no worker could start (a bad --address is an InputError)."""

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
        """Start or join; Ray's signal handlers are replaced by the ones before (``farm.signals``), and
        an interrupt while Ray starts stops what started and unwinds as the interrupt."""
        ray = import_ray()
        if ray.is_initialized():
            return self
        handlers = current_handlers()
        try:
            if self.address is None:
                self._start_local(ray)
            else:
                self._connect(ray, probe(self.address))
        except BaseException as err:
            with held():
                self.close()  # what ray.init had started
            reraise(err)
        finally:
            restore(handlers)
        self.owned = True
        return self

    def _connect(self, ray, address: str) -> None:
        """Join ``address`` (probed: a Ray cluster answers there); what Ray's core logs meanwhile is
        shown only when it joined (a failure is our one line)."""
        captured: list[str] = []
        try:
            with _stderr_kept(captured):
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise InputError(f"--address {self.address}: cannot join the Ray cluster there ({_first_line(err)})") from None
        self.owned = True
        if captured[0]:
            sys.stderr.write(captured[0])

    def _start_local(self, ray) -> None:
        import ray._private.ray_constants as constants

        self._set_env(_LOOPBACK_ENV, "0")
        constants.ENABLE_RAY_CLUSTER = False  # the already-imported module reads it per call
        if "RAY_AUTH_MODE" not in os.environ:
            self._set_env("RAY_AUTH_MODE", "token")
            self._set_env("RAY_AUTH_TOKEN", secrets.token_hex(32))
            _refresh_ray_config()
        self.owned = self.local = True  # from here on close() stops what ray.init started
        ray.init(
            address="local", num_cpus=self.num_cpus, num_gpus=self.num_gpus, include_dashboard=False,
            logging_level=logging.WARNING, log_to_driver=True,
        )

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


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + an empty SETTINGS frame
_SETTINGS = 4


def probe(address: str, timeout_s: float = 3.0) -> str:
    """``address`` (``auto`` resolved to the cluster ``ray start`` left on this machine) once a Ray
    cluster answers there: its GCS is a gRPC server, so it answers HTTP/2's preface with a SETTINGS
    frame. Anything else is one line within seconds (exit code 2); ``ray.init`` itself would retry
    for minutes, logging as it goes."""
    target = address
    if address == "auto":
        target = _auto_address()
        if target is None:
            raise InputError("--address auto: no Ray cluster found on this machine (no `ray start` here, RAY_ADDRESS unset); "
                             "give HOST:PORT or drop --address")
    hostport = target.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--address {address}: give HOST:PORT of the cluster's head (or auto)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as conn:
            conn.settimeout(timeout_s)
            conn.sendall(_HTTP2_PREFACE)
            frame = conn.recv(9)
    except OSError as err:
        why = getattr(err, "strerror", None) or (f"no answer within {timeout_s:.0f} s" if isinstance(err, TimeoutError) else str(err))
        raise InputError(f"--address {address}: no Ray cluster answers there ({why}); start one with `ray start --head` "
                         f"or drop --address") from None
    if len(frame) < 9 or frame[3] != _SETTINGS:
        raise InputError(f"--address {address}: no Ray cluster answers there (something else listens on port {port}); "
                         f"give the head's GCS port (`ray start --head --port`, 6379 by default)")
    if "://" not in target:  # a GCS (a Ray Client server, ray://, is left to ray.init)
        _ask_gcs(hostport, address, timeout_s)
    return target


def _ask_gcs(hostport: str, address: str, timeout_s: float) -> None:
    """Ray's own quick check: the GCS at ``hostport`` tells its cluster id (another gRPC server
    answers 404; a cluster with another token refuses ours)."""
    try:
        from ray._raylet import InnerGcsClient
    except ImportError:  # pragma: no cover - another Ray: ray.init checks
        return
    try:
        with _stderr_kept([]):  # its log lines: the error below says it
            InnerGcsClient.standalone(hostport, None, int(timeout_s * 1000))
    except Exception as err:
        if "Authentication" in type(err).__name__:
            raise InputError(f"--address {address}: the Ray cluster there refuses this machine's token ({_first_line(err)}); set "
                             f"RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH as on its nodes") from None
        raise InputError(f"--address {address}: no Ray cluster answers there ({_first_line(err)}); give the head's GCS port "
                         f"(`ray start --head --port`, 6379 by default)") from None


@contextlib.contextmanager
def _stderr_kept(captured: list[str]):
    """File descriptor 2 (where Ray's C++ core logs, a line per retry) goes to a temporary file
    while inside; its text is appended to ``captured`` after."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as kept:
        os.dup2(kept.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            kept.seek(0)
            captured.append(kept.read().decode(errors="replace"))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _auto_address() -> str | None:
    """What ``ray.init(address="auto")`` would join: RAY_ADDRESS, else the cluster ``ray start`` recorded."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address("auto")
    except Exception:  # nothing recorded (or a Ray without this helper): ray.init says why
        return os.environ.get("RAY_ADDRESS")


def _refresh_ray_config() -> None:
    """Ray caches its configuration (authentication mode included) per process; re-read it after
    changing RAY_AUTH_MODE in this process's environment."""
    try:
        from ray._raylet import Config

        Config.initialize("")
    except Exception:  # pragma: no cover - a Ray without this hook reads the environment at init
        pass
