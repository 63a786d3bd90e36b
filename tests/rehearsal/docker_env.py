"""Docker for the rehearsal: the engine, locally made base images, the worker image, containers.

These machines reach the PyPI, npm and Debian registries but no image registry, so the base
images are made here: Debian bookworm (debootstrap) with pyenv's CPython 3.12 installed under
/usr/local, like the official ``python:3.12-slim``, and imported under that very name so the
worker's Dockerfile builds unchanged and nothing is pulled. Everything goes through Debian's
docker CLI; builds and start-up take a machine-wide file lock, so pytest-xdist workers can call
these functions at the same time.

Example::

    ensure_base_images()
    image = build_worker_image(Path("cdk.out"))
    container = run_container(image, name="worker-1", env={"AWS_REGION": "us-east-1"})
    container.wait(timeout=60)
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DOCKER = "/usr/bin/docker"
DOCKERD_LOG = Path("/tmp/overseer-rehearsal-dockerd.log")
CACHE_DIR = Path(os.environ.get("OVERSEER_REHEARSAL_CACHE", "/var/cache/overseer-rehearsal"))
# The name the worker's Dockerfile asks for, and the image the Lambda functions run in.
BASE_IMAGE = "python:3.12-slim"
LAMBDA_BASE_IMAGE = "overseer-rehearsal/lambda-base:3.12"
WORKER_IMAGE = "overseer-worker:rehearsal"
LABEL = "overseer-rehearsal=1"
# The process that started a container: leftovers are the containers whose process has ended,
# so that rehearsals running side by side (pytest-xdist workers, other checkouts) keep theirs.
OWNER_LABEL = "overseer-rehearsal.owner"
IMAGE_PATH = "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The shared libraries pyenv's CPython links against (readelf -d lib-dynload/*.so), and what the
# official slim image adds (ca-certificates, netbase, tzdata). Tk is left out, as in slim.
BASE_PACKAGES = (
    "ca-certificates,netbase,tzdata,libssl3,libffi8,libsqlite3-0,liblzma5,libbz2-1.0,zlib1g,"
    "libreadline8,libncursesw6,libtinfo6,libuuid1,libcrypt1,libnsl2,libtirpc3"
)
PYTHON_CHECK = (
    "import sys, ssl, sqlite3, ctypes, lzma, bz2, zlib, uuid, readline, curses, decimal, zoneinfo; "
    "assert sys.prefix == '/usr/local', sys.prefix; print(sys.version)"
)
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class DockerError(RuntimeError):
    """Docker could not start, build or run what the rehearsal asked for."""


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; stdout and stderr are captured as text."""
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise DockerError(f"docker {' '.join(args)} failed ({result.returncode}):\n{_tail(result)}")
    return result


def _tail(result: subprocess.CompletedProcess[str], lines: int = 60) -> str:
    return "\n".join((result.stdout + result.stderr).splitlines()[-lines:])


_lock_depth = 0


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """One holder per machine (flock); re-entrant within a process."""
    global _lock_depth
    if _lock_depth:
        _lock_depth += 1
        try:
            yield
        finally:
            _lock_depth -= 1
        return
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _lock_depth = 1
        try:
            yield
        finally:
            _lock_depth = 0
            fcntl.flock(lock, fcntl.LOCK_UN)


def _engine_answers() -> bool:
    if not Path(DOCKER).exists():
        return False
    return docker("version", "--format", "{{.Server.Version}}", timeout=30, check=False).returncode == 0


def ensure_docker() -> str:
    """Return the docker client's path, starting the engine when its socket does not answer."""
    if _engine_answers():
        return DOCKER
    with _machine_lock():
        if _engine_answers():
            return DOCKER
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        if not Path(DOCKER).exists() or not Path(dockerd).exists():
            raise DockerError("Docker is not installed: run scripts/rehearsal-prereqs.sh as root")
        # No container network on a private range: containers use the host's (--network host).
        with open(DOCKERD_LOG, "ab") as log:
            subprocess.Popen(
                [dockerd, "--bridge=none", "--iptables=false"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while not _engine_answers():
            if time.monotonic() > deadline:
                raise DockerError(f"dockerd did not answer within 60 s; see {DOCKERD_LOG}")
            time.sleep(1)
    return DOCKER


def _image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def ensure_base_images() -> None:
    """Make ``python:3.12-slim`` and the Lambda base locally, once per machine."""
    ensure_docker()
    with _machine_lock():
        if _image_exists(BASE_IMAGE) and _image_exists(LAMBDA_BASE_IMAGE):
            return
        python_home = _pyenv_python312()
        minbase = _debootstrap_minbase()
        root = CACHE_DIR / "image-root"
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["cp", "-a", "--reflink=auto", str(minbase), str(root)], check=True)
        try:
            _install_python(root, python_home)
            # This machine intercepts TLS to the registries with its own CA: the base trusts the
            # host's bundle, so `pip install` in a build reaches PyPI. Local base only: the image
            # that ships is built on the real python:3.12-slim, which never sees this bundle.
            shutil.copyfile(HOST_CA_BUNDLE, root / HOST_CA_BUNDLE.relative_to("/"))
            _import_rootfs(root, BASE_IMAGE)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        docker("tag", BASE_IMAGE, LAMBDA_BASE_IMAGE)
        check = docker(
            "run", "--rm", "--network", "none", BASE_IMAGE, "python3", "-c", PYTHON_CHECK, check=False
        )
        if check.returncode != 0:
            docker("rmi", BASE_IMAGE, LAMBDA_BASE_IMAGE, check=False)
            raise DockerError(f"the local {BASE_IMAGE} has no working CPython 3.12:\n{_tail(check)}")


def _pyenv_python312() -> Path:
    roots = [os.environ.get("PYENV_ROOT", ""), "/root/.pyenv"]
    found = sorted(
        (Path(p) for root in roots if root for p in glob.glob(f"{root}/versions/3.12.*")),
        key=lambda p: [int(part) for part in re.findall(r"\d+", p.name)],
    )
    if not found:
        raise DockerError("no CPython 3.12 under $(pyenv root)/versions/3.12.*: install it with pyenv")
    return found[-1]


def _apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 sources first, then sources.list)."""
    for sources in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for line in Path(sources).read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    with contextlib.suppress(FileNotFoundError):
        for line in Path("/etc/apt/sources.list").read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["deb"] and "security" not in line:
                return next(p for p in parts[1:] if "://" in p)
    return "http://deb.debian.org/debian"


def _debootstrap_minbase() -> Path:
    """Debian bookworm minbase with the libraries CPython needs, cached across runs."""
    rootfs = CACHE_DIR / "bookworm-minbase"
    if (rootfs / "etc/debian_version").exists():
        return rootfs
    if not shutil.which("debootstrap"):
        raise DockerError("debootstrap is not installed: run scripts/rehearsal-prereqs.sh as root")
    staging = CACHE_DIR / "bookworm-minbase.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    result = subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={BASE_PACKAGES}",
            "bookworm",
            str(staging),
            _apt_mirror(),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise DockerError(f"debootstrap failed:\n{_tail(result)}")
    for cache in ("var/cache/apt", "var/lib/apt/lists"):
        for entry in (staging / cache).glob("*"):
            if entry.is_file():
                entry.unlink()
    staging.rename(rootfs)
    return rootfs


def _install_python(root: Path, python_home: Path) -> None:
    """Install pyenv's CPython under /usr/local, as the official image does.

    Its binary finds libpython through an absolute RUNPATH (``readelf -d``) under the pyenv
    version directory, so that path stays in the image as a link to /usr/local (and /root is
    made traversable for uid 1000). Python finds its prefix from the executable's location.
    """

    def skip(directory: str, names: list[str]) -> set[str]:
        if directory == str(python_home / "lib/python3.12"):
            return {"test", "idlelib"} & set(names)
        if directory == str(python_home / "lib/python3.12/site-packages"):
            # Only what a fresh install has (pip), none of this machine's own additions.
            return {n for n in names if not n.startswith("pip") and n != "README.txt"}
        return set()

    shutil.copytree(python_home, root / "usr/local", symlinks=True, dirs_exist_ok=True, ignore=skip)
    runpath = root / python_home.relative_to("/")
    runpath.parent.mkdir(parents=True, exist_ok=True)
    runpath.symlink_to("/usr/local")
    (root / "root").chmod(0o755)
    old_shebang = f"#!{python_home}/bin/".encode()
    for script in (root / "usr/local/bin").iterdir():
        if script.is_file() and not script.is_symlink():
            content = script.read_bytes()
            if content.startswith(old_shebang):
                script.write_bytes(b"#!/usr/local/bin/" + content[len(old_shebang) :])
    for name, target in {
        "python": "python3.12",
        "python3": "python3.12",
        "pip": "pip3.12",
        "pip3": "pip3.12",
    }.items():
        link = root / "usr/local/bin" / name
        if not link.exists():
            link.symlink_to(target)


def _import_rootfs(root: Path, tag: str) -> None:
    changes = [
        f"ENV PATH={IMAGE_PATH}",
        "ENV LANG=C.UTF-8",
        # Local base only (see the CA bundle above): pip uses certifi's bundle unless told.
        f"ENV PIP_CERT={HOST_CA_BUNDLE}",
        'CMD ["python3"]',
    ]
    tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
    args = [DOCKER, "import", *(arg for change in changes for arg in ("-c", change)), "-", tag]
    result = subprocess.run(args, stdin=tar.stdout, capture_output=True, text=True, timeout=600, check=False)
    assert tar.stdout is not None
    tar.stdout.close()
    if tar.wait() != 0 or result.returncode != 0:
        raise DockerError(f"docker import of {root} failed:\n{_tail(result)}")


def build_worker_image(cdk_out: Path, tag: str = WORKER_IMAGE) -> str:
    """Build the worker image exactly as ``cdk deploy`` would, from the asset ``cdk synth`` staged.

    The build context is ``cdk_out/asset.<hash>`` (never the repository root), with the asset's
    Dockerfile, build arguments and target. Returns the tag.
    """
    entries = [
        entry["source"]
        for manifest in sorted(Path(cdk_out).glob("*.assets.json"))
        for entry in json.loads(manifest.read_text()).get("dockerImages", {}).values()
    ]
    if len(entries) != 1:
        raise DockerError(f"expected one Docker image asset in {cdk_out}, found {len(entries)}")
    (source,) = entries
    context = Path(cdk_out) / source["directory"]
    args = ["build", "--network", "host", "-f", str(context / source.get("dockerFile", "Dockerfile"))]
    for key, value in source.get("dockerBuildArgs", {}).items():
        args += ["--build-arg", f"{key}={value}"]
    if "dockerBuildTarget" in source:
        args += ["--target", source["dockerBuildTarget"]]
    ensure_base_images()
    with _machine_lock():
        result = docker(*args, "-t", tag, str(context), timeout=1200, check=False)
    if result.returncode != 0:
        raise DockerError(f"building the worker image from {context} failed:\n{_tail(result)}")
    return tag


@dataclass(frozen=True)
class Container:
    """A detached container started by :func:`run_container`."""

    id: str
    name: str

    def _state(self, field: str) -> str:
        return docker("inspect", "--format", f"{{{{.State.{field}}}}}", self.id).stdout.strip()

    def status(self) -> str:
        """Docker's state: created, running, exited..."""
        return self._state("Status")

    def exit_code(self) -> int | None:
        """The exit code once the container has stopped, else None."""
        return None if self.status() in ("created", "running", "restarting") else int(self._state("ExitCode"))

    def logs(self) -> str:
        """Everything the container wrote, stdout and stderr interleaved."""
        result = subprocess.run(
            [DOCKER, "logs", self.id],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout

    def stop(self, timeout: int = 10) -> None:
        """SIGTERM to PID 1 (the entrypoint), SIGKILL after ``timeout`` seconds."""
        docker("stop", "--time", str(timeout), self.id, timeout=timeout + 60)

    def kill(self, signal: str = "KILL") -> None:
        docker("kill", "--signal", signal, self.id)

    def wait(self, timeout: float) -> int:
        """Wait for the container to exit and return its exit code; TimeoutError after ``timeout``."""
        try:
            return int(docker("wait", self.id, timeout=timeout).stdout.strip())
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"container {self.name} still running after {timeout} s") from exc

    def remove(self) -> None:
        """Remove the container and its anonymous volumes (the image declares /scratch one)."""
        docker("rm", "--force", "--volumes", self.id, check=False)


def run_container(
    image: str,
    *,
    name: str,
    env: Mapping[str, str],
    user: str | None = None,
    mounts: Sequence[tuple[str, str, bool]] = (),
    read_only_root: bool = False,
    tmpfs: Sequence[str] = (),
    memory_mib: int | None = None,
    entrypoint: str | None = None,
    command: Sequence[str] = (),
    workdir: str | None = None,
    stop_timeout: int = 30,
) -> Container:
    """Start a detached container on the host's network, labelled for :func:`remove_leftovers`.

    ``mounts`` are ``(host_path, container_path, read_only)``. PID 1 is the entrypoint itself
    (no ``--init``), as on Batch; ``stop_timeout`` is the SIGTERM grace (ECS's default is 30 s).
    """
    args = [
        "run",
        "--detach",
        "--network",
        "host",
        "--name",
        name,
        "--label",
        LABEL,
        "--label",
        f"{OWNER_LABEL}={os.getpid()}",
        "--stop-timeout",
        str(stop_timeout),
    ]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    if user is not None:
        args += ["--user", user]
    for source, target, read_only in mounts:
        args += ["--volume", f"{source}:{target}{':ro' if read_only else ''}"]
    if read_only_root:
        args.append("--read-only")
    for path in tmpfs:
        args += ["--tmpfs", path]
    if memory_mib is not None:
        args += ["--memory", f"{memory_mib}m"]
    if entrypoint is not None:
        args += ["--entrypoint", entrypoint]
    if workdir is not None:
        args += ["--workdir", workdir]
    ensure_docker()
    container_id = docker(*args, image, *command).stdout.strip()
    return Container(id=container_id, name=name)


def unique_name(prefix: str) -> str:
    """A container name no other pytest-xdist worker will pick."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def remove_leftovers() -> None:
    """Remove every container a rehearsal started (by label) whose process has ended, e.g.
    after an interrupted session; those of running processes are theirs."""
    listing = docker(
        "ps", "--all", "--filter", f"label={LABEL}", "--format", f'{{{{.ID}}}} {{{{.Label "{OWNER_LABEL}"}}}}'
    ).stdout
    rows = [line.split(" ", 1) for line in listing.splitlines() if line.strip()]
    ids = [row[0] for row in rows if not _running(row[1] if len(row) > 1 else "")]
    if ids:
        docker("rm", "--force", "--volumes", *ids, check=False)


def _running(pid: str) -> bool:
    """Whether process ``pid`` runs (False for a container without an owner: "<no value>")."""
    if not pid.strip().isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True
