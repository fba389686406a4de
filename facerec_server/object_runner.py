"""Object recognition for the server node: parameters, one schedule per input, a child process.

Object models can take seconds per frame on a CPU and dlib holds the GIL, so they run in
their own process (core.object_scheduler.RecognizerProcess) behind a rate-limited
latest-frame scheduler per input: face results are never delayed by them.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List, Optional

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from facerec_server.core.images import decode_image
from facerec_server.core.object_scheduler import ObjectScheduler, RecognizerProcess
from facerec_server.core.objects import (MODEL_PARAMETER_DEFAULTS, PARAMETER_PREFIX,
                                         configs_from_parameters, model_names_from_parameter)
from facerec_server.params import ParamSpec, kind_of
from facerec_server.ros_params import declare


class ObjectRunner:
    """Schedules object recognition per input and reports results through ``publish``."""

    @staticmethod
    def declare_model_parameters(node) -> List[str]:
        """Declare ``object_recognition.<name>.<field>`` for every listed model (read-only)."""
        names = model_names_from_parameter(
            node.get_parameter(f"{PARAMETER_PREFIX}.models").value)
        declare(node, [ParamSpec(f"{PARAMETER_PREFIX}.{name}.{key}", default, kind_of(default),
                                 f"object model '{name}': {key} (see config/server.yaml)",
                                 read_only=True)
                       for name in names for key, default in MODEL_PARAMETER_DEFAULTS.items()])
        return names

    @staticmethod
    def configs_of(node) -> list:
        """The object model configs of ``node``'s parameters (ObjectModelError if invalid)."""
        values = {f"{PARAMETER_PREFIX}.{name}": p.value
                  for name, p in node.get_parameters_by_prefix(PARAMETER_PREFIX).items()}
        return configs_from_parameters(values)

    def __init__(self, node, publish: Callable):
        self._node = node
        self._publish = publish
        self.configs = self.configs_of(node)  # ObjectModelError: stop at start-up
        self._recognizer: Optional[RecognizerProcess] = None
        self._schedulers: Dict[str, ObjectScheduler] = {}
        self._lock = threading.Lock()
        self.processed = 0
        self.errors = 0
        self.last_error = ""
        if not self.configs:
            node.get_logger().info(
                "no object models configured (object_recognition.models is empty): "
                "~/objects stays silent")
            return
        start = time.perf_counter()
        self._recognizer = RecognizerProcess(self.configs)  # ObjectModelError: missing file
        node.get_logger().info(
            f"object models loaded in a child process in {time.perf_counter() - start:.1f} s: "
            f"{', '.join(self._recognizer.model_ids)}")

    def offer(self, topic: str, header, data: bytes, fmt: str) -> None:
        """Hand a frame to the topic's scheduler (returns at once; newest frame wins)."""
        if self._recognizer is None:
            return
        with self._lock:  # inputs' worker threads arrive here concurrently
            scheduler = self._schedulers.get(topic)
            if scheduler is None:
                scheduler = ObjectScheduler(
                    self._node.settings.objects_max_rate,
                    lambda frame: self._recognize(frame),
                    lambda results, token, t=topic: self._done(t, token, results),
                    on_error=self._error, name=f"objects:{topic}")
                self._schedulers[topic] = scheduler
        scheduler.set_rate(self._node.settings.objects_max_rate)
        scheduler.submit((data, fmt), (header, time.perf_counter()))

    def _recognize(self, frame):
        data, fmt = frame
        settings = self._node.settings
        if not settings.objects_enabled:
            return None
        return self._recognizer.recognize(decode_image(data, fmt, settings.max_pixels),
                                          settings.label_count, settings.deterministic,
                                          settings.crops)

    def _done(self, topic: str, token, results) -> None:
        if results is None or not self._node.settings.objects_enabled:
            return  # disabled while this frame ran: publish nothing after the switch-off
        header, started = token
        with self._lock:
            self.processed += 1
        self._publish(topic, header, results, time.perf_counter() - started)

    def _error(self, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._node.get_logger().warning(f"object recognition failed: {self.last_error}",
                                        throttle_duration_sec=5.0)

    def diagnostic_status(self, node_name: str) -> DiagnosticStatus:
        status = DiagnosticStatus(name=f"{node_name}: objects", hardware_id=node_name)
        status.level = DiagnosticStatus.WARN if self.errors else DiagnosticStatus.OK
        status.message = (self.last_error[:200] if self.errors else
                          "no object models configured" if self._recognizer is None else "ok")
        replaced = sum(s.replaced for s in list(self._schedulers.values()))
        status.values = [KeyValue(key="models", value=", ".join(c.model_id for c in self.configs)),
                         KeyValue(key="processed", value=str(self.processed)),
                         KeyValue(key="dropped_replaced", value=str(replaced)),
                         KeyValue(key="errors", value=str(self.errors))]
        return status

    def stop(self) -> None:
        for scheduler in list(self._schedulers.values()):
            scheduler.stop()
        if self._recognizer is not None:
            self._recognizer.close()
