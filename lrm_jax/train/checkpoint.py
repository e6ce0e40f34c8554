"""Orbax checkpoints of the train state *and* the grain iterator, plus preemption.

Saves are atomic (orbax writes to a temporary directory and renames it when complete), keep
the last N, and a crash or SIGTERM in the middle of a save leaves the previous checkpoint
readable. Restore order (train_and_evaluate): the workdir's own latest checkpoint, then
``config.resume`` (state + iterator), then ``config.init_from`` (parameters only), then
scratch.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import grain
import jax
import orbax.checkpoint as ocp

from lrm_jax.errors import DataError

# Checkpoints that fail to restore are moved here (beside ``checkpoints/``), never deleted.
UNREADABLE_DIR = "checkpoints.unreadable"


def _abs(path: str) -> str:
  return os.path.abspath(os.path.expanduser(path))


def use_coordination_service_barriers() -> bool:
  """With several processes, makes orbax wait at its barriers on the coordination service.

  Orbax's default cross-process barrier is an all-gather over every device. On CPU (gloo)
  a collective whose peer arrives more than 30 s later fails ("Gloo context initialization
  failed: GetKeyValue() timed out"), and processes do drift that far apart before the
  first save (start-up, compilation, another job on the host). The coordination service's
  barrier (``experimental_orbax_use_distributed_barrier``) waits up to orbax's timeout
  (300 s) instead. Takes effect where absl flags are parsed (``lrm_jax.main``); returns
  whether it did.
  """
  if jax.process_count() == 1:
    return False
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed() or \
      "experimental_orbax_use_distributed_barrier" not in flags.FLAGS:
    return False
  flags.FLAGS.experimental_orbax_use_distributed_barrier = True
  return True


class Checkpointer:
  """A ``CheckpointManager`` with two items: ``state`` (pytree) and ``data`` (iterator)."""

  def __init__(self, directory: str, keep: int = 3, async_save: bool = False,
               create: bool = True):
    use_coordination_service_barriers()
    self.directory = _abs(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, iterator=None, force: bool = True) -> None:
    items = {"state": ocp.args.StandardSave(state)}
    if iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(iterator)
    self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def restore(self, abstract_state, iterator=None, step: int | None = None):
    """Restores ``state`` (with the shardings of ``abstract_state``) and the iterator."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}.")
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    has_data = os.path.isdir(os.path.join(self.directory, str(step), "data"))
    if iterator is not None and has_data:
      items["data"] = grain.checkpoint.CheckpointRestore(iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"]

  def restore_newest_readable(self, abstract_state, iterator=None):
    """Restores the newest checkpoint that restores: ``(state, step, failures)``.

    A checkpoint whose ``state`` or ``data`` item fails to restore (a truncated array file,
    a missing item, an empty iterator file) is moved aside to ``checkpoints.unreadable/``
    (by process 0; never deleted) and the next older one is tried. ``failures`` lists
    ``"step S (item): reason"`` for each one moved. Raises ``DataError`` listing every
    attempt when none restores.
    """
    failures = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      item = "state"
      try:
        state = self.restore(abstract_state, None, step)
        item = "data"
        if iterator is not None:
          self._restore_iterator(iterator, step)
        return state, step, failures
      except Exception as e:  # pylint: disable=broad-except  # orbax/tensorstore raise many
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        failures.append(f"step {step} ({item}): {type(e).__name__}: {reason}")
        self._move_aside(step)
    tried = "; ".join(failures) or "no checkpoints"
    raise DataError(f"no checkpoint in {self.directory} can be restored ({tried}). The "
                    f"unreadable ones were moved to {self._unreadable_dir()}.")

  def _restore_iterator(self, iterator, step: int) -> None:
    if not os.path.isdir(os.path.join(self.directory, str(step), "data")):
      raise FileNotFoundError(f"no 'data' item (the data iterator) in step {step}")
    self.manager.restore(step, args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointRestore(iterator)))

  def _unreadable_dir(self) -> str:
    return os.path.join(os.path.dirname(self.directory), UNREADABLE_DIR)

  def _move_aside(self, step: int) -> None:
    """Moves ``step`` out of the manager's directory (process 0), then all processes
    re-read the directory."""
    if jax.process_index() == 0:
      os.makedirs(self._unreadable_dir(), exist_ok=True)
      target = os.path.join(self._unreadable_dir(), f"{step}.{int(time.time())}")
      os.rename(os.path.join(self.directory, str(step)), target)
      print(f"warning: checkpoint step {step} could not be restored; moved it to {target}.")
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"checkpoint_moved_aside_{step}")
    self.manager.reload()

  def restore_params(self, abstract_params, step: int | None = None):
    """Only the parameters (for ``init_from``): ``state.params`` of a checkpoint."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}.")
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item={"params": abstract_params},
            restore_args=jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding),
                                      {"params": abstract_params}),
            partial_restore=True)))
    return restored["state"]["params"]

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def checkpoint_dir(workdir_or_ckpt: str) -> str:
  """Accepts a workdir (``W/checkpoints``) or a checkpoints directory itself."""
  path = _abs(workdir_or_ckpt)
  sub = os.path.join(path, "checkpoints")
  return sub if os.path.isdir(sub) else path


class PreemptionFlag:
  """Set by SIGTERM (and SIGINT if asked); the loop saves and exits cleanly when it is set."""

  def __init__(self, also_sigint: bool = False):
    self._event = threading.Event()
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      sigs = [signal.SIGTERM] + ([signal.SIGINT] if also_sigint else [])
      for s in sigs:
        self._previous[s] = signal.signal(s, self._handler)

  def _handler(self, signum, frame):  # pylint: disable=unused-argument
    self._event.set()

  def __bool__(self) -> bool:
    return self._event.is_set()

  def set(self) -> None:
    self._event.set()

  def restore_handlers(self) -> None:
    for s, h in self._previous.items():
      signal.signal(s, h)
    self._previous = {}
