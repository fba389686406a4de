"""ROS side of ``facerec_server.params``: ParamSpecs declared on a node, with descriptors.

Every node (server, bridge, camera) declares its parameters with :func:`declare`, so all
follow one rule: an integer is taken wherever a double is declared, and stored as the double
-- ``max_frame_age: 5`` in a parameter file, ``-p fps:=15``, ``ros2 param set
/facerec_server max_frame_age 5``, ``ros2 param load`` -- so ``ros2 param get`` and ``dump``
always show the declared type (rclpy alone refuses it: "Wrong parameter type, expected '3'
got '2'"). Run-time sets are converted by a pre-set-parameters callback, which rclpy has since
Iron; on Humble an integer for a double is still refused at run time (files and ``-p`` work).

A parameter with an empty name is refused (rclpy takes one: its check for undeclared names,
``any(names)``, is false for ``[""]``, so SetParameters declared it and list_parameters
listed it).
"""
from __future__ import annotations

import weakref
from typing import Any, Dict, Iterable, List, Optional

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.exceptions import ParameterException
from rclpy.parameter import Parameter

from facerec_server.params import ParamSpec

_KINDS = {
    "bool": ParameterType.PARAMETER_BOOL,
    "int": ParameterType.PARAMETER_INTEGER,
    "double": ParameterType.PARAMETER_DOUBLE,
    "string": ParameterType.PARAMETER_STRING,
    "string_array": ParameterType.PARAMETER_STRING_ARRAY,
    "int_array": ParameterType.PARAMETER_INTEGER_ARRAY,
    "double_array": ParameterType.PARAMETER_DOUBLE_ARRAY,
}
_WORDS = {"bool": "true or false", "int": "an integer", "double": "a number",
          "string": "a string", "string_array": "a list of strings",
          "int_array": "a list of integers", "double_array": "a list of numbers"}

# node -> {name: ParamSpec} of what declare() declared on it (one pre-set callback per node:
# rclpy concatenates the lists its pre-set callbacks return)
_DECLARED: "weakref.WeakKeyDictionary[Any, Dict[str, ParamSpec]]" = weakref.WeakKeyDictionary()


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """Description, type, read-only flag, choices and numeric range of one parameter."""
    desc = ParameterDescriptor(description=spec.description, type=_KINDS[spec.kind],
                               read_only=spec.read_only)
    if spec.choices:
        desc.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.kind == "int" and spec.low is not None and spec.high is not None:
        desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high),
                                           step=1)]
    if spec.kind == "double" and spec.low is not None and spec.high is not None:
        desc.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                        to_value=float(spec.high), step=0.0)]
    return desc


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def coerce(spec: ParamSpec, value):
    """``value`` converted to the type ``spec`` declares where the rule allows (an integer
    for a double, integers for a double array, an integer for an ``integer_as_string``
    string); otherwise ``value`` itself, unchanged."""
    if spec.kind == "double" and _integer(value):
        return float(value)
    if spec.kind == "double_array" and not isinstance(value, (str, bytes)) \
            and hasattr(value, "__iter__"):
        items = list(value)
        if items and all(_integer(v) for v in items):
            return [float(v) for v in items]
    if spec.kind == "string" and spec.integer_as_string and _integer(value):
        return str(value)
    return value


def type_error(spec: ParamSpec, value) -> Optional[str]:
    """Why ``value`` is not of ``spec``'s kind (None when it is)."""
    element = {"string_array": str, "int_array": int, "double_array": float}.get(spec.kind)
    if element is not None:
        ok = not isinstance(value, (str, bytes)) and hasattr(value, "__iter__") and all(
            isinstance(v, element) and not isinstance(v, bool) for v in value)
    else:
        python = {"bool": bool, "int": int, "double": float, "string": str}[spec.kind]
        ok = isinstance(value, python) and (spec.kind == "bool" or not isinstance(value, bool))
    return None if ok else f"{spec.name} must be {_WORDS[spec.kind]}, got {value!r}"


def declare(node, specs: Iterable[ParamSpec]) -> Dict[str, Any]:
    """Declare ``specs`` on ``node``: defaults overridden by the node's parameter files and
    ``-p`` arguments, converted by :func:`coerce`. Returns ``{name: value}``.

    Raises ValueError (one line: the parameter, the value given, what is allowed) for a value
    of the wrong type, out of range or refused by the spec's own check."""
    specs = list(specs)
    known = _DECLARED.get(node)
    if known is None:
        known = _DECLARED.setdefault(node, {})
        if hasattr(node, "add_pre_set_parameters_callback"):  # rclpy of Iron and later
            node.add_pre_set_parameters_callback(lambda parameters: _coerced(known, parameters))
        node.add_on_set_parameters_callback(_named)
    values = {}
    for spec in specs:
        values[spec.name] = _declare(node, spec)
        known[spec.name] = spec
    return values


def _error(spec: ParamSpec, reason: str) -> ValueError:
    return ValueError(f"invalid parameter: {reason} (set {spec.name} in the parameter file, "
                      f"or with --ros-args -p {spec.name}:=...)")


def _declare(node, spec: ParamSpec):
    try:
        value = node.declare_parameter(spec.name, spec.default, descriptor(spec)).value
    except ParameterException:
        pass  # the value given has another type, or is out of range: see which
    else:  # start-up values get the same checks as run-time changes
        reason = spec.validate(value)
        if reason is not None:
            raise _error(spec, reason)
        return value
    # Read the value given with any type (rclpy has no public getter for parameter
    # overrides), then declare the parameter with its descriptor and the converted value.
    given = node.declare_parameter(spec.name, spec.default,
                                   ParameterDescriptor(dynamic_typing=True)).value
    node.undeclare_parameter(spec.name)
    value = coerce(spec, given)
    reason = type_error(spec, value) or spec.validate(value)
    if reason is None:
        try:
            return node.declare_parameter(spec.name, value, descriptor(spec),
                                          ignore_override=True).value
        except ParameterException as exc:
            reason = str(exc)
    raise _error(spec, reason)


def _named(parameters: List[Parameter]) -> SetParametersResult:
    """On-set-parameters callback: every parameter has a name (see the module docstring)."""
    if any(not parameter.name for parameter in parameters):
        return SetParametersResult(successful=False, reason="a parameter name is empty: give "
                                   "the name of a declared parameter (ros2 param list)")
    return SetParametersResult(successful=True)


def _coerced(specs: Dict[str, ParamSpec], parameters: List[Parameter]) -> List[Parameter]:
    """Pre-set-parameters callback: the parameters with :func:`coerce` applied."""
    result = []
    for parameter in parameters:
        spec = specs.get(parameter.name)
        value = coerce(spec, parameter.value) if spec is not None else parameter.value
        result.append(parameter if value is parameter.value
                      else Parameter(parameter.name, value=value))
    return result
