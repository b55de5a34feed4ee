"""Live early exit on another framework's network, no export step.

``adapt(module, framework)`` wraps a trained SpikingJelly, snnTorch or Norse network (or any network that threads
its state explicitly) as a seenn :class:`~seenn.models.SpikingNetwork`, so the runner, every exit rule,
``calibrate``, ``report``, ``energy`` and ``bench`` work on it unchanged. Each framework has one small module
(``spikingjelly``, ``snntorch``, ``explicit``) implementing the same :class:`~seenn.interop.base.PeerState`: reset
the peer's state, keep only the surviving samples' rows of every state tensor it holds (batch compaction on the
peer's own state), and start newcomers' rows at rest (continuous batching). ``load_peer`` builds one from a user's
Python file (a factory function) and a safetensors or ``weights_only`` state-dict file; nothing else is unpickled.
"""

from __future__ import annotations

from .base import FRAMEWORKS, PeerNetwork, adapt, detect_framework
from .load import load_peer, peer_run_config

__all__ = ["FRAMEWORKS", "PeerNetwork", "adapt", "detect_framework", "load_peer", "peer_run_config"]
