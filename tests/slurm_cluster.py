"""A two-node SLURM cluster on this machine, for the tests: Debian's slurm-wlm and munge.

    python tests/slurm_cluster.py start DIR   # prints the SLURM_CONF path once both nodes are idle
    python tests/slurm_cluster.py stop DIR

Each node is a host of its own: a network namespace (``ip netns``) with its own address on a
bridge, its own hostname (a UTS namespace) and its own ``/etc/hosts`` entry
(``/etc/netns/NS/hosts``), running its own ``slurmd``; ``slurmctld`` runs here, on the
bridge's address. The nodes share this machine's filesystem, as a cluster's nodes share
NFS. :func:`start` installs the packages when they are missing (apt, as root), writes
``slurm.conf`` into ``DIR`` (partition ``debug``, ``select/cons_tres``, no accounting; a
node that stops answering is marked down after :data:`SLURMD_TIMEOUT_S` and its jobs
requeued), starts munged, slurmctld and the slurmds as root and waits until ``sinfo`` shows
both nodes idle. It raises :class:`Unavailable` with the reason where it cannot (not root, no
apt, packages not installable, no network namespaces).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

PACKAGES = ("slurm-wlm", "munge")
PARTITION = "debug"
NODES = ("gnode1", "gnode2")
SUBNET = "10.77.0"  # the bridge is .1, node i is .(i + 2)
BRIDGE = "gatest-br"
SLURMD_TIMEOUT_S = 6  # a node silent this long is down, its jobs requeued


def namespace(node: str) -> str:
  return f"gatest-{node}"


def address(i: int) -> str:
  return f"{SUBNET}.{i + 2}"


class Unavailable(RuntimeError):
  """No cluster can be started here; the message says why."""


def _run(*command, check=True, **kw):
  return subprocess.run(command, check=check, capture_output=True, text=True, **kw)


def install() -> None:
  if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged")):
    return
  if os.geteuid() != 0:
    raise Unavailable("slurm-wlm is not installed and installing it needs root")
  if not shutil.which("apt-get"):
    raise Unavailable("slurm-wlm is not installed and there is no apt-get")
  env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
  done = _run("apt-get", "install", "-y", "-q", *PACKAGES, check=False, env=env)
  if done.returncode:
    _run("apt-get", "update", "-q", check=False, env=env)
    done = _run("apt-get", "install", "-y", "-q", *PACKAGES, check=False, env=env)
  if done.returncode:
    raise Unavailable(f"apt-get install {' '.join(PACKAGES)} failed: {done.stderr[-300:]}")


def config_text(folder: str) -> str:
  memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
  nodes = [
    f"NodeName={node} NodeAddr={address(i)} CPUs={os.cpu_count()} "
    f"RealMemory={memory_mb * 9 // 10} State=UNKNOWN"
    for i, node in enumerate(NODES)
  ]
  return "\n".join(
    [
      "ClusterName=gradamp-test",
      f"SlurmctldHost={socket.gethostname()}({SUBNET}.1)",
      "SlurmUser=root",
      "SlurmdUser=root",
      "AuthType=auth/munge",
      # A requeued job waits cred_expire seconds before it may start again (default 120).
      "AuthInfo=cred_expire=10",
      f"StateSaveLocation={folder}/state",
      f"SlurmdSpoolDir={folder}/spool-%n",
      f"SlurmctldPidFile={folder}/slurmctld.pid",
      f"SlurmdPidFile={folder}/slurmd-%n.pid",
      f"SlurmctldLogFile={folder}/slurmctld.log",
      f"SlurmdLogFile={folder}/slurmd-%n.log",
      "SlurmctldPort=6817",
      "SlurmdPort=6818",
      "ProctrackType=proctrack/linuxproc",
      "TaskPlugin=task/none",
      "SelectType=select/cons_tres",
      "SelectTypeParameters=CR_CPU",
      "SchedulerType=sched/backfill",
      # What the project needs of a site (docs/sweeps.md, "Multi-node"): a silent node is
      # marked down and its batch jobs requeued (JobRequeue=1); a node that registers again
      # returns to service.
      f"SlurmdTimeout={SLURMD_TIMEOUT_S}",
      "ReturnToService=2",
      "JobRequeue=1",
      "MessageTimeout=5",
      "MpiDefault=none",
      "JobCompType=jobcomp/none",
      "AccountingStorageType=accounting_storage/none",
      "JobAcctGatherType=jobacct_gather/none",
      "KillWait=10",
      "MinJobAge=600",
      *nodes,
      f"PartitionName={PARTITION} Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP",
      "",
    ]
  )


def start(folder: str, timeout_s: float = 60) -> str:
  """Starts the cluster; returns the path of its ``slurm.conf`` (set ``SLURM_CONF`` to it)."""
  install()
  folder = os.path.abspath(folder)
  for sub in ("state", "munge"):
    os.makedirs(os.path.join(folder, sub), exist_ok=True)
  conf = os.path.join(folder, "slurm.conf")
  with open(conf, "w") as f:
    f.write(config_text(folder))
  env = dict(os.environ, SLURM_CONF=conf)
  _remove_network()
  _make_network()
  _start_munge()
  _run("slurmctld", "-c", "-f", conf, env=env)
  for node in NODES:
    start_node(node, conf)
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    states = node_states(env)
    if set(states.values()) == {"idle"} and len(states) == len(NODES):
      return conf
    time.sleep(0.5)
  raise Unavailable(f"the nodes are not idle after {timeout_s:.0f} s (sinfo: {states})")


def start_node(node: str, conf: str) -> None:
  """Starts ``node``'s slurmd in its network namespace, under its own hostname and with its
  own ``/etc/hosts`` (``nsenter``, not ``ip netns exec``, which would hide the cgroups)."""
  ns = namespace(node)
  os.makedirs(os.path.join(os.path.dirname(conf), f"spool-{node}"), exist_ok=True)
  command = (
    f"hostname {node} && mount --bind /etc/netns/{ns}/hosts /etc/hosts "
    f"&& exec slurmd -f {conf} -N {node}"
  )
  net = f"--net=/run/netns/{ns}"
  _run("nsenter", net, "unshare", "--uts", "--mount", "--", "sh", "-c", command)


def node_states(env=None) -> dict[str, str]:
  """``{node: state}`` as ``sinfo`` lists them (``idle``, ``alloc``, ``down*``, …)."""
  text = _run("sinfo", "-h", "-N", "-o", "%N %t", check=False, env=env).stdout
  return dict(line.split() for line in text.splitlines() if len(line.split()) == 2)


def _make_network() -> None:
  try:
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
  except (subprocess.CalledProcessError, FileNotFoundError) as e:
    raise Unavailable(f"no network namespaces here (ip link add ... bridge: {e})") from None
  _run("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
  _run("ip", "link", "set", BRIDGE, "up")
  hosts = "".join(f"{address(i)} {node}\n" for i, node in enumerate(NODES))
  for i, node in enumerate(NODES):
    ns, veth = namespace(node), f"gatest-v{i}"
    _run("ip", "netns", "add", ns)
    _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _run("ip", "link", "set", veth, "master", BRIDGE, "up")
    _run("ip", "-n", ns, "addr", "add", f"{address(i)}/24", "dev", "eth0")
    _run("ip", "-n", ns, "link", "set", "eth0", "up")
    _run("ip", "-n", ns, "link", "set", "lo", "up")
    os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
    with open(f"/etc/netns/{ns}/hosts", "w") as f:
      f.write(f"127.0.0.1 localhost\n{hosts}{SUBNET}.1 {socket.gethostname()}\n")


def _remove_network() -> None:
  for i, node in enumerate(NODES):
    _run("ip", "netns", "del", namespace(node), check=False)
    _run("ip", "link", "del", f"gatest-v{i}", check=False)
    shutil.rmtree(f"/etc/netns/{namespace(node)}", ignore_errors=True)
  _run("ip", "link", "del", BRIDGE, check=False)


def cut(node: str) -> None:
  """Cuts ``node`` off the network (its link down): to the cluster it is a lost host."""
  _run("ip", "link", "set", f"gatest-v{NODES.index(node)}", "down")


def _start_munge() -> None:
  if _run("pgrep", "-x", "munged", check=False).returncode == 0:
    return
  key = "/etc/munge/munge.key"
  if not os.path.exists(key):
    _run("mungekey", "--create", check=False) if shutil.which("mungekey") else None
  os.makedirs("/run/munge", exist_ok=True)
  shutil.chown("/run/munge", "munge", "munge")
  _run("runuser", "-u", "munge", "--", "munged", "--force")


def stop(folder: str) -> None:
  """Cancels every job, stops the slurmds and slurmctld (munged is left to the machine) and
  removes the nodes' namespaces."""
  folder = os.path.abspath(folder)
  env = dict(os.environ, SLURM_CONF=os.path.join(folder, "slurm.conf"))
  _run("scancel", "--full", "-u", "root", check=False, env=env)
  for pid_file in [f"slurmd-{node}.pid" for node in NODES] + ["slurmctld.pid"]:
    path = os.path.join(folder, pid_file)
    if os.path.exists(path):
      with open(path) as f:
        pid = int(f.read().strip() or 0)
      if pid:
        _run("kill", str(pid), check=False)
  time.sleep(1)
  _remove_network()


if __name__ == "__main__":
  action, where = sys.argv[1], sys.argv[2]
  if action == "start":
    print(start(where))
  else:
    stop(where)
