"""Shared helpers for bench/*.py: machine description, table printing, RESULTS.md append."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def vector_extensions() -> str:
  """The CPU's vector extensions that decide XLA:CPU's speed (AVX2, FMA, AVX-512, AMX),
  and the cap ``XLA_FLAGS=--xla_cpu_max_isa=...`` puts on what XLA generates."""
  flags = set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          flags = set(line.split(":", 1)[1].split())
          break
  except OSError:
    return "?"
  names = [("avx2", "AVX2"), ("fma", "FMA"), ("avx512f", "AVX-512"),
           ("avx512_bf16", "AVX512-BF16"), ("amx_tile", "AMX")]
  found = " ".join(label for flag, label in names if flag in flags) or "no AVX2"
  cap = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_cpu_max_isa" in f]
  return found + (f" (XLA capped: {cap[0].split('=', 1)[1]})" if cap else "")


def set_isa_from_argv() -> None:
  """``--isa AVX2`` (or ``--isa=AVX2``) on a bench's command line caps the instructions
  XLA:CPU generates (``--xla_cpu_max_isa``): an AVX-512/AMX machine then runs the code an
  AVX2-only CPU would. Call before jax is imported."""
  import sys  # pylint: disable=g-import-not-at-top
  for i, arg in enumerate(sys.argv):
    isa = arg.split("=", 1)[1] if arg.startswith("--isa=") else (
        sys.argv[i + 1] if arg == "--isa" and i + 1 < len(sys.argv) else None)
    if isa:
      os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                 f" --xla_cpu_max_isa={isa.upper()}").strip()


def machine() -> str:
  """One line describing the host: CPU model and vector extensions, cores, memory, jax."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  cpu = f"{cpu} [{vector_extensions()}]"
  mem = ""
  try:
    with open("/proc/meminfo") as f:
      kb = int(f.readline().split()[1])
      mem = f", {kb / 2**20:.0f} GiB"
  except OSError:
    pass
  try:
    import jax
    backend = f", jax {jax.__version__} {jax.default_backend()} x{jax.device_count()}"
  except Exception:  # pylint: disable=broad-except
    backend = ""
  return f"{cpu}, {os.cpu_count()} cores{mem}{backend}"


def git_rev() -> str:
  try:
    return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                   stderr=subprocess.DEVNULL).strip()
  except Exception:  # pylint: disable=broad-except
    return "unknown"


def format_table(header: list[str], rows: list[list]) -> str:
  """A markdown table."""
  def fmt(v):
    if isinstance(v, float):
      return f"{v:.4g}"
    return str(v)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def report(title: str, header: list[str], rows: list[list], notes: str = "",
           append: bool = True) -> str:
  """Prints the table and appends it, with date, machine and git revision, to RESULTS.md."""
  table = format_table(header, rows)
  stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
  text = f"\n## {title}\n\n{stamp} · {machine()} · git {git_rev()}\n\n{table}\n"
  if notes:
    text += f"\n{notes}\n"
  print(text)
  if append:
    with open(RESULTS, "a") as f:
      f.write(text)
  return text


def timeit(fn, *args, warmup: int = 1, repeats: int = 3) -> float:
  """Median wall seconds of ``fn(*args)`` (blocks on jax outputs)."""
  import jax
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  times.sort()
  return times[len(times) // 2]
