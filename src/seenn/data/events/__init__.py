"""Event streams: early exit on neuromorphic (DVS) data, where leaving early means reading less of the sensor.

- :mod:`.formats`: readers for N-MNIST / N-Caltech101 (ATIS binary), AEDAT 2.0 and AEDAT 3.1, each checked; the
  N-MNIST writer.
- :mod:`.frames`: a recording as ``T`` frames (equal time windows or equal event counts, two polarities) and the
  sensor time at the end of each frame.
- :mod:`.emulate`: the DVS emulator that turns real images into recordings (N-MNIST's saccades, CIFAR10-DVS's
  moving monitor).
- :mod:`.folder`: ``emulate_folder`` behind ``seenn events emulate`` (a workflow above the data layer: import it
  from ``seenn.data.events.folder``; this package does not).
- :mod:`.dataset`: ``--dataset events:PATH``, a folder of recordings as a time-varying dataset.

seenn reads these formats itself (numpy, a few dozen lines each) rather than through tonic: tonic is GPL-3
licensed, which an Apache / MIT project cannot take as a dependency; its format descriptions were the reference.
"""

from .dataset import EventDataset, is_events
from .emulate import SensorModel, emulate
from .formats import Events, read_events
from .frames import to_frames

__all__ = ["EventDataset", "Events", "SensorModel", "emulate", "is_events", "read_events", "to_frames"]
